"""Cassettes: recording exchanges without secrets (``cassette``) and serving them offline through
the sandbox's HTTP server (``replay``)."""
