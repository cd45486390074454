"""What a csql text says, on the client side: the tables and names it mentions (``text``), the
``{name}`` parameters and table qualification (``params``), and the catalog as it concerns a
query: ``tables()``/``columns()``, catalog types for frames, errors that teach (``guide``).
"""
