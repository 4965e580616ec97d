"""The three run scales, one vocabulary for the runner, the loaders and every experiment.

- `smoke`: tiny sizes and a tiny organism, for `make test` (tests the pipeline, never the claim);
- `full`:  the book's sizes, chosen to fit 2 CPU cores (each experiment's docstring states them);
- `paper`: the paper's sizes where the data exist, for a GPU: 412 calibration examples per side
  (paper.md section 3.2), evaluation sets of at least `PAPER_MIN_EVAL` prompts per measure, and
  for real models the paper's data sources through the hub loaders when online (AdvBench prune
  prompts, Alpaca without safety rows as preserve prompts), the offline sets otherwise (recorded).

Every size remains a config field that a notebook's `config` parameter (or `-p field=value`) can
raise, whatever the scale.
"""
from __future__ import annotations

SCALES = ("smoke", "full", "paper")
#: calibration examples per side in the paper (the authors' scripts sample 412 of each)
PAPER_CALIBRATION = 412
#: the smallest evaluation set the paper scale allows per measure (one answer is then <= 1 point)
PAPER_MIN_EVAL = 100


def check_scale(scale: str) -> str:
    """`scale` if it is one of `SCALES`, else a ValueError that lists them."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return scale


def per_group(total: int, groups: int) -> int:
    """Prompts per group so that `groups` groups hold at least `total` in all."""
    return -(-total // max(1, groups))




def apply_overrides(config, overrides: dict) -> None:
    """Set every non-None `overrides` entry on the dataclass `config`; an unknown name is an error
    that lists the fields (a typo must never be silently ignored)."""
    from dataclasses import fields
    names = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field(s) {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)

__all__ = ["SCALES", "PAPER_CALIBRATION", "PAPER_MIN_EVAL", "check_scale", "per_group", "apply_overrides"]
