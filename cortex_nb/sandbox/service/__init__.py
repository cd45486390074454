"""The emulated Cortex Data Lake service: routes (``api``), OAuth2 (``tokens``), query jobs
(``jobs``), the DuckDB engine (``engine``, ``csql``, ``typecheck``, ``policy``), page cursors
(``cursors``) and result retention (``retention``)."""
