"""The sandbox's synthetic logs: the world they describe (``world``: hosts, users, the story's
facts), the generators (``flows``: network flows and the firewall logs about them; ``story``;
``events``), catalog columns in DuckDB (``columns``) and the tables made from them (``logs``)."""
