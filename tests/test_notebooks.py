"""The committed notebooks: executed in full, and no secret in any stored output.

(nbval runs them afresh through the README's `pytest`; these checks read the files as stored.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cortex_nb.sandbox.tokens import DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer (?!\$TOKEN|\*{6}|error=|realm=)\S+")  # not WWW-Authenticate


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01-getting-started.ipynb", "02-httpclient.ipynb", "03-investigation.ipynb",
    ]


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
