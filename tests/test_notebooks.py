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

from cortex_nb import Credentials, HTTPClient, QueryService
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


def _what_a_user_makes(folder: Path, sandbox) -> None:
    """What following the notebooks and the README leaves in ``folder`` (notebooks/)."""
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    traffic = f"`{sandbox.instance_id}.firewall.traffic`"
    service = QueryService(client=client)
    service.query(f"SELECT * FROM {traffic} LIMIT 50", to=folder / "traffic_all")
    service.query(f"SELECT app FROM {traffic} LIMIT 5", to=folder / "apps")  # not partitioned
    files = {
        ".traffic_week.partial-0123456789ab/date=2026-11-25/hour=13/part-00000.parquet": "x",
        "investigation.cassette": "{}", "Untitled.ipynb": "{}", "Untitled1.ipynb": "{}",
        ".ipynb_checkpoints/01-getting-started-checkpoint.ipynb": "{}",
        "cache/0123abcd.parquet": "x", "cache/0123abcd.json": "{}",
        "incidents.csv": "a\n", "incidents.parquet": "x", "__pycache__/x.pyc": "x",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_what_users_make_in_notebooks_stays_out_of_git_status(tmp_path, sandbox):
    git = ["git", "-C", str(tmp_path), "-c", "core.excludesFile=/dev/null"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    _what_a_user_makes(tmp_path / "notebooks", sandbox)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=all"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()
    ours = {f"notebooks/{n}" for n in [*NAMES, "04-replay.cassette", ".gitignore"]}
    assert {line.removeprefix("?? ") for line in status} == ours
