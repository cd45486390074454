"""The old names of the notebook's connection: ``Session`` is ``Connection``,
``get_session`` is ``get_connection`` (see ``cortex_nb.connection``)."""

from cortex_nb.connection import Connection as Session
from cortex_nb.connection import get_connection as get_session

__all__ = ["Session", "get_session"]
