"""Every finding's notebook has the form the runner and the book rely on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_parameters_and_every_code_cell_is_folded(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    # the book shows results first: a code cell whose source is not folded reads as clutter between them
    unfolded = [c.get("id") for c in code if "hide-input" not in c["metadata"].get("tags", [])]
    assert not unfolded, f"{path.name}: code cells without the hide-input tag: {unfolded}"
