"""Write a notebook from a list of (cell_type, source) pairs: keeps notebook sources reviewable.

Used by the lead to (re)generate the committed notebooks in `notebooks/`; the notebooks, not
this script, are the source of truth once committed.

Every code cell is tagged `hide-input`: the book folds the code (a reader clicks to see it) and
shows its output, so results come first. A cell may carry more tags as a third element, e.g.
`("code", src, ["hide-output"])` for a long table the book folds behind a toggle.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat


#: tags of every code cell (Jupyter Book v1 folds the input, keeps the output)
CODE_TAGS = ["hide-input"]


def write(path: str | Path, cells: list[tuple]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    first_code = True
    for kind, src, *extra in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(src)
            tags = (["parameters"] if first_code else []) + CODE_TAGS + [t for t in (extra[0] if extra else [])]
            cell.metadata["tags"] = list(dict.fromkeys(tags))
            first_code = False
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    Path(path).write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    sys.exit("import this module from a notebook spec script")
