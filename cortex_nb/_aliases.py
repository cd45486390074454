"""The old flat module names, kept importable while code moves to the packages by concern.

``import cortex_nb.frames`` (and every other name in ``OLD_MODULES``) still works: it gives the
module at its new place (``cortex_nb.results.frames``), the same object, with a
``DeprecationWarning`` naming the new place. New code imports the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["OLD_MODULES", "install"]

# old module name (under cortex_nb) -> where it lives now
OLD_MODULES = {
    "security": "http.security",
    "endpoints": "http.endpoints",
    "transport": "http.transport",
    "credentials": "http.credentials",
    "profiles": "http.profiles",
    "httpclient": "http.client",
    "tracing": "http.tracing",
    "sqltext": "sql.text",
    "sqlparams": "sql.params",
    "dataguide": "sql.guide",
    "background": "query.background",
    "frames": "results.frames",
    "datasets": "results.datasets",
    "cache": "results.cache",
    "connection": "notebook.connection",
    "session": "notebook.connection",
    "magic": "notebook.magic",
    "completion": "notebook.completion",
    "panel": "notebook.panel",
    "display": "notebook.display",
    "cassette": "record.cassette",
    "replay": "record.replay",
}


class _AliasLoader(importlib.abc.Loader):
    """Hands out the module at its new place instead of running anything."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new}; import it from there (the old name will go).",
            DeprecationWarning, stacklevel=6,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported at its new place."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the old module names (``cortex_nb.frames``) and nothing else."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        package, _, name = fullname.rpartition(".")
        if package != "cortex_nb" or name not in OLD_MODULES:
            return None
        new = f"cortex_nb.{OLD_MODULES[name]}"
        return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, new))


def install() -> None:
    """Make the old names importable (once per process)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
