"""Tables as the book shows them: Markdown, so the page's own table style wraps long cells to the
text column, and nothing is cut by pandas' column-width truncation.

    display(Markdown(markdown_table(view.sweep_table(result))))
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "-" if math.isnan(value) else f"{float(value):.{digits}f}"
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def interval_text(ci: dict[str, float] | None, *, scale: float = 1.0, signed: bool = False) -> str:
    """A stored interval (`value`, `lo`, `hi`) as `0.42 [0.35, 0.50]` (`signed`: `+0.42 ...`), times
    `scale`; "-" where there is none."""
    if not ci:
        return "-"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"{f.format(ci['value'] * scale)} [{f.format(ci['lo'] * scale)}, {f.format(ci['hi'] * scale)}]"


def markdown_table(df: pd.DataFrame, *, index: bool = True, digits: int = 3) -> str:
    """A DataFrame as a Markdown pipe table, every cell in full (floats to `digits` places)."""
    cols = list(df.columns)
    head = ([str(df.index.name or "")] if index else []) + [str(c) for c in cols]
    lines = ["| " + " | ".join(_cell(h, digits) for h in head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        cells = ([_cell(idx, digits)] if index else []) + [_cell(row[c], digits) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_pairs(pairs: dict[str, Any]) -> str:
    """A labelled list (label: value) as Markdown bullets: long values wrap instead of widening a table."""
    return "\n".join(f"- **{k}**: {_cell(v, 3)}" for k, v in pairs.items())


__all__ = ["markdown_table", "markdown_pairs"]
