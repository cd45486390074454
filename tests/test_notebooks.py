"""The committed notebooks: executed in full, and no secret in any stored output.

(nbval runs them afresh through the README's `pytest`; these checks read the files as stored.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cortex_nb.sandbox.service.tokens import DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN

ROOT = Path(__file__).parent.parent
NAMES = (
    "01-getting-started.ipynb", "02-httpclient.ipynb", "03-investigation.ipynb",
    "04-replay.ipynb",
)
NOTEBOOKS = [ROOT / "notebooks" / name for name in NAMES]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer (?!\$TOKEN|\*{6}|error=|realm=)\S+")  # not WWW-Authenticate


def test_the_notebooks_exist():
    assert all(path.is_file() for path in NOTEBOOKS)


def test_pytest_runs_only_the_project_s_notebooks(tmp_path):
    """A notebook the user saves into notebooks/ (where `cortex-nb lab` opens) is not a test."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_one.py").write_text("def test_one():\n    assert True\n")
    (tmp_path / "notebooks").mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "notebooks")
    (tmp_path / "notebooks" / "my-scratch.ipynb").write_text(NOTEBOOKS[0].read_text())
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "01-getting-started.ipynb" in collected.stdout
    assert "my-scratch" not in collected.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_in_order(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, "run the notebook top to bottom before committing it"
    assert counts == sorted(counts) and counts[0] == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_secret_in_stored_outputs_or_widget_state(path):
    text = path.read_text()
    for secret in (DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN):
        assert secret not in text
    assert not JWT.search(text), "an access token was saved in the notebook"
    assert not BEARER.search(text), "a bearer token was saved in the notebook"


def test_the_example_cassette_holds_no_secret_and_no_instance_id():
    """04-replay.ipynb runs from a cassette recorded from the sandbox (instance sandbox0)."""
    text = (ROOT / "notebooks" / "04-replay.cassette").read_text()
    for secret in (DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN, "sandbox0"):
        assert secret not in text
    assert not JWT.search(text) and not BEARER.search(text)
    assert "`<instance>.firewall.traffic`" in text
