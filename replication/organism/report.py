"""Where an organism's loss sits along a response (`nll_profile`): whether gradient scores can
say anything about content (organism-notes.md, "Memorisation"). Behaviour is measured by the
shared evaluator (`replication.measure`), emergent misalignment in `replication.em`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data import Example


@torch.no_grad()
def nll_profile(model, tokenizer, examples: Sequence[Example], fmt: str = "raw", max_positions: int = 30,
                batch_size: int = 64) -> list[float]:
    """Mean NLL (nats) at each of the first `max_positions` response tokens, over `examples`.

    Tokenised exactly as the harmful (prune) side of the scores (`scoring.tokenize_example`)."""
    from ..batching import collate
    from ..scoring import tokenize_example
    sums = torch.zeros(max_positions, dtype=torch.float64)
    counts = torch.zeros(max_positions, dtype=torch.float64)
    encoded = [tokenize_example(tokenizer, e, "prune", fmt) for e in examples]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s:s + batch_size]
        batch = collate(chunk, pad, device)
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float(), -1).cpu()
        for r, (a, lab) in enumerate(chunk):
            start = next(i for i, t in enumerate(lab) if t != -100)
            for k in range(min(max_positions, len(a) - start)):
                pos = start + k
                sums[k] -= logp[r, pos - 1, a[pos]].double()
                counts[k] += 1
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]
