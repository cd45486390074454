"""The package surface: public names, lazy heavy imports, the exception tree."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import cortex_nb
from cortex_nb import _aliases, exceptions


def test_every_public_name_resolves():
    for name in cortex_nb.__all__:
        assert getattr(cortex_nb, name) is not None, name
    assert set(exceptions.__all__) <= set(cortex_nb.__all__)


def test_every_library_error_is_a_cortex_error():
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.CortexError)
    assert issubclass(exceptions.HTTPError, exceptions.CortexError)


def test_import_does_not_load_heavy_modules():
    code = (
        "import sys, cortex_nb; cortex_nb.HTTPClient; cortex_nb.Credentials; "
        "print(','.join(m for m in ('pandas', 'ipywidgets', 'duckdb', 'sqlglot') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_module_imports_the_package_root():
    """Modules import what they use from its own module (the version from ``_version``)."""
    import ast
    from pathlib import Path

    package = Path(cortex_nb.__file__).parent
    modules = {p.stem for p in package.iterdir()} | {"sandbox"}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "cortex_nb":
                names = {alias.name for alias in node.names}
                assert names <= modules, f"{path.name} imports {names - modules} from cortex_nb"
    from cortex_nb._version import __version__

    assert cortex_nb.__version__ == __version__


def test_http_client_keywords_are_visible_to_help_and_ides():
    import inspect

    from cortex_nb import HTTPClient

    client_params = inspect.signature(HTTPClient).parameters
    seed = ("auto_refresh", "auto_retry", "credentials", "enforce_json", "force_trace", "port",
            "raise_for_status", "url", "timeout")
    for name in seed:
        assert client_params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    request_params = inspect.signature(HTTPClient.request).parameters
    for name in ("method", "path", "endpoint", "idempotent", *seed):
        assert request_params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert client_params["port"].default == 443 and client_params["auto_retry"].default is True


def test_old_session_names_still_work():
    with pytest.warns(DeprecationWarning, match="cortex_nb.notebook.connection"):
        from cortex_nb.session import Session, get_session

    from cortex_nb.notebook.connection import Connection, get_connection

    assert Session is Connection and get_session is get_connection
    assert cortex_nb.get_session() is cortex_nb.get_connection()


@pytest.mark.parametrize("old", sorted(_aliases.OLD_MODULES))
def test_old_module_names_import_the_moved_module_with_a_warning(old):
    """Code written against the flat layout (``import cortex_nb.frames``) keeps working."""
    new = importlib.import_module(f"cortex_nb.{_aliases.OLD_MODULES[old]}")
    sys.modules.pop(f"cortex_nb.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"cortex_nb.{_aliases.OLD_MODULES[old]}"):
        module = importlib.import_module(f"cortex_nb.{old}")
    assert module is new


def test_old_query_module_names_resolve_in_the_query_package():
    from cortex_nb.query import DEFAULT_MAX_ROWS, QueryJob, QueryService, Result

    assert QueryService.__module__ == "cortex_nb.query.service"
    assert QueryJob.__module__ == "cortex_nb.query.job" and DEFAULT_MAX_ROWS > 0
    assert Result.__name__ == "Result"
    with pytest.raises(ImportError, match="nothing"):
        from cortex_nb.query import nothing  # noqa: F401
