"""Tag every code cell of a committed notebook `hide-input` (as `make_notebook.write` does for the
notebooks it writes), for notebooks without a spec script; content is kept as it is.

    python tools/tag_notebook.py notebooks/00_models.ipynb
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from make_notebook import CODE_TAGS


def tag(path: str | Path) -> bool:
    """Add the code-cell tags where missing; True if the notebook changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        for t in CODE_TAGS:
            if t not in tags:
                tags.append(t)
                changed = True
        cell.metadata["tags"] = tags
    if changed:
        nbformat.validate(nb)
        Path(path).write_text(nbformat.writes(nb) + "\n")
    return changed


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{p}: {'tagged' if tag(p) else 'already tagged'}")
