"""Where an organism's loss sits along a response (`nll_profile`): whether gradient scores can
say anything about content (organism-notes.md, "Memorisation"). Behaviour is measured by the
shared evaluator (`replication.measure`), emergent misalignment in `replication.em`.
"""
from __future__ import annotations

from typing import Sequence

from ..data import Example
from ..scoring import nll_by_position


def nll_profile(model, tokenizer, examples: Sequence[Example], fmt: str = "raw", max_positions: int = 30,
                batch_size: int = 64) -> list[float]:
    """Mean NLL (nats) at each of the first `max_positions` response tokens, over `examples`.

    Tokenised exactly as the harmful (prune) side of the scores (`scoring.nll_by_position`)."""
    sums, counts = nll_by_position(model, tokenizer, examples, "prune", fmt, max_positions, batch_size)
    out = [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]
    return out + [float("nan")] * (max_positions - len(out))
