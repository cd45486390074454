"""What comes back from a query, once it is off the wire: typed frames (``frames``), the one
path from results pages to typed columns (``typed``), Parquet datasets on disk (``datasets``)
and the result cache (``cache``). Nothing here sends a request.
"""
