"""The user's own calibration data for B-TAP as a tool: a JSONL or CSV file -> `Example`s.

    from replication.user_data import read_examples
    harmful = read_examples("harmful.jsonl", kind="harmful")   # prune data
    benign = read_examples("benign.csv", kind="benign")         # preserve data

A file holds one example per row with the columns `prompt` and `response` (both text; the
response is what the loss is taken on) and, optionally, `category` (any label; kept in the mask's
record of its data). Other columns are ignored. JSONL: one JSON object per line, blank lines
skipped. CSV: a header row, then one row per example (any quoting `csv` reads; UTF-8, a BOM is fine).

Every problem is a `UserDataError` (a `ToolError`, a `ValueError`) whose one-line message names the file, the
line and what to change, raised before any model is loaded or any pass over the data runs.
Each example remembers where it came from (`meta["file"]`, `meta["line"]`), so that a row that
only fails later, at tokenisation, is named the same way (`check_tokenizes`).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from .data import Example

REQUIRED_COLUMNS = ("prompt", "response")
OPTIONAL_COLUMNS = ("category",)
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
FORMAT_HELP = ("one example per row with the columns 'prompt' and 'response' (text) and optionally "
               "'category'")


class ToolError(ValueError):
    """B-TAP as a tool (`replication.tool`) cannot go on with what it was given; the one-line
    message says what to fix. Defined here, the lightest module of the tool, so that the command
    line can catch it without importing torch."""


class UserDataError(ToolError):
    """The user's data file cannot be used as it is; the message says what to fix."""


def read_examples(path: str | Path, kind: str) -> list[Example]:
    """Read and validate a JSONL or CSV file of `prompt`/`response` rows as `Example`s of `kind`
    ("harmful": prune data, "benign": preserve data), in file order (order fixes summation order,
    hence the scores bit for bit)."""
    path = Path(path)
    if not path.is_file():
        raise UserDataError(f"{path}: no such file; pass a .jsonl or .csv file with {FORMAT_HELP}")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UserDataError(f"{path}: unknown file type {path.suffix or '(none)'!r}; use .jsonl (one JSON "
                            f"object per line) or .csv (a header row) with {FORMAT_HELP}")
    try:
        rows = list(_jsonl_rows(path) if fmt == "jsonl" else _csv_rows(path))
    except UnicodeDecodeError as err:
        raise UserDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    if not rows:
        raise UserDataError(f"{path}: the file has no examples; add {FORMAT_HELP}")
    return [_example(path, line, row, kind) for line, row in rows]


def _jsonl_rows(path: Path):
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserDataError(f"{path}:{line_no}: not valid JSON ({err.msg} at column {err.colno}); "
                                    "write one JSON object per line") from None
            if not isinstance(row, dict):
                raise UserDataError(f"{path}:{line_no}: expected a JSON object such as "
                                    f'{{"prompt": "...", "response": "..."}}, got {type(row).__name__}')
            yield line_no, row


def _csv_rows(path: Path):
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        consumed = 0
        for fields in reader:
            # a quoted field may span lines: a row starts on the line after the previous row ended
            line_no, consumed = consumed + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                if missing:
                    raise UserDataError(f"{path}:{line_no}: the header has no "
                                        f"{' or '.join(repr(c) for c in missing)} column (found {header}); the "
                                        f"first row must name the columns, {FORMAT_HELP}")
                continue
            if len(fields) > len(header):
                raise UserDataError(f"{path}:{line_no}: {len(fields)} fields but the header names {len(header)} "
                                    "columns; quote fields that contain commas")
            yield line_no, dict(zip(header, fields))


def _example(path: Path, line: int, row: dict[str, Any], kind: str) -> Example:
    where = f"{path}:{line}"
    missing = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
    if missing:
        raise UserDataError(f"{where}: the row has no {' or '.join(repr(c) for c in missing)} (it has "
                            f"{sorted(row)}); every row needs {FORMAT_HELP}")
    values = {}
    for col in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        v = row.get(col)
        if v is None and col in OPTIONAL_COLUMNS:
            v = ""
        if not isinstance(v, str):
            raise UserDataError(f"{where}: {col!r} must be text, got {type(v).__name__} {v!r}")
        values[col] = v
    if not values["prompt"].strip():
        raise UserDataError(f"{where}: the prompt is empty; give every row a prompt or drop the row")
    if not values["response"].strip():
        raise UserDataError(f"{where}: the response is empty, so there is nothing to take the loss on; "
                            "give it a response or drop the row")
    return Example(prompt=values["prompt"], response=values["response"], category=values["category"], kind=kind,
                   meta={"file": str(path), "line": line})


def check_tokenizes(tokenizer: Any, examples: Sequence[Example], role: str, fmt: str = "raw",
                    skip_response_tokens: int = 0) -> None:
    """Tokenise every example as scoring will (`scoring.tokenize_example`) and raise a
    `UserDataError` naming the file and line of the first that cannot be used (e.g. a response
    that tokenises to nothing), before any pass over the data."""
    from .scoring import tokenize_example

    for i, ex in enumerate(examples):
        try:
            tokenize_example(tokenizer, ex, role, fmt, skip_response_tokens, index=i)
        except ValueError as err:
            where = f"{ex.meta.get('file', '?')}:{ex.meta.get('line', i + 1)}"
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserDataError(f"{where}: {detail}") from None


def data_summary(examples: Sequence[Example]) -> dict[str, Any]:
    """What a mask records about the data that made it: the file, the row count and the categories."""
    cats: dict[str, int] = {}
    for ex in examples:
        cats[ex.category] = cats.get(ex.category, 0) + 1
    files = sorted({str(ex.meta.get("file", "")) for ex in examples})
    return {"files": files, "n": len(examples), "categories": cats}


__all__ = ["ToolError", "UserDataError", "read_examples", "check_tokenizes", "data_summary", "REQUIRED_COLUMNS", "FORMAT_HELP"]
