"""The package surface: public names, lazy heavy imports, the exception tree."""

from __future__ import annotations

import subprocess
import sys

import cortex_nb
from cortex_nb import exceptions


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
