"""Right-padded batches of (input_ids, labels) rows and the response-only loss on them.

Every place that trains or scores a causal LM on "prompt masked, response labelled" rows (the
fine-tunes, the organism's training, importance scoring, the judges' NLL, the organism's NLL
profile, the SmolLM2 safety SFT) pads the same way: right padding, so that a row's real tokens sit
at the same positions as when it is run alone (a causal model's outputs there do not depend on the
padding), labels -100 on padding, attention mask 1 on real tokens. One `collate` keeps them all
padding identically; what differs between callers (how the loss is reduced, how rows are grouped
into batches) stays with the caller.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

#: The label that `torch.nn.functional.cross_entropy` (and Hugging Face's loss) ignores.
IGNORE = -100

Row = tuple[Sequence[int], Sequence[int]]   # (input_ids, labels aligned with them, IGNORE where unscored)


def collate(rows: Sequence[Row], pad_id: int, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-pad `rows` to the longest one: `input_ids` (padded with `pad_id`), `labels` (padded with
    -100) and `attention_mask` (1 on real tokens), as long tensors on `device` (None: CPU).

    A row's labels may be shorter than its input_ids (the rest count as -100)."""
    if not rows:
        raise ValueError("collate needs at least one row")
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[r, :len(lab)] = torch.tensor(lab, dtype=torch.long)
        attention_mask[r, :len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch


def response_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None, **model_kwargs: Any) -> torch.Tensor:
    """Mean next-token NLL over the labelled positions of the batch (labels == -100 ignored), with the
    vocabulary projection computed only there.

    The same number as `model(..., labels=labels).loss` of a Hugging Face causal LM (Hugging Face's
    label shift, one mean over every labelled token of the batch), without the (batch x length x
    vocabulary) logits of the prompt positions: on SmolLM2 the tied vocabulary projection is a fifth
    of the model. A peft-wrapped model is unwrapped to its base model (the adapters stay active).
    `position_ids` with no `attention_mask` is a `pack`ed batch; `model_kwargs` go to the model's forward
    (the `segment_shapes` of an `organism.bucketing` batch, say)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False, **model_kwargs).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def pack(rows: Sequence[Row], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack `rows` (each at most `width` tokens) into as few rows of `width` tokens as first-fit
    decreasing finds: `input_ids`, `labels` and `position_ids`, no `attention_mask`.

    Why: padding short rows to the longest one wastes a quarter of the organism's training compute.
    Position ids restart at 0 for every packed row, and a Hugging Face model given `position_ids`
    without an attention mask (and no cache: `use_cache=False`) attends only within each run of
    consecutive positions, so every row sees exactly what it would see alone. Each row's first
    label is set to -100: alone it was never predicted (the label shift), packed it would be
    predicted from the previous row's last token. The free tail of a packed row is padding with
    its own positions and labels -100. So the loss (a mean over labelled tokens) is the unpacked
    batch's loss, up to float summation order."""
    if not rows:
        raise ValueError("pack needs at least one row")
    too_long = max(len(ids) for ids, _ in rows)
    if too_long > width:
        raise ValueError(f"a row of {too_long} tokens does not fit a packed width of {width}; truncate rows first")
    free: list[int] = []
    members: list[list[int]] = []
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i][0])):
        n = len(rows[i][0])
        slot = next((b for b, room in enumerate(free) if room >= n), None)
        if slot is None:
            free.append(width)
            members.append([])
            slot = len(free) - 1
        free[slot] -= n
        members[slot].append(i)
    input_ids = torch.full((len(members), width), pad_id, dtype=torch.long)
    labels = torch.full((len(members), width), IGNORE, dtype=torch.long)
    position_ids = torch.empty((len(members), width), dtype=torch.long)
    for r, idx in enumerate(members):
        at = 0
        for i in idx:
            ids, lab = rows[i]
            n = len(ids)
            input_ids[r, at:at + n] = torch.tensor(ids, dtype=torch.long)
            labels[r, at + 1:at + len(lab)] = torch.tensor(lab[1:], dtype=torch.long)
            position_ids[r, at:at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(width - at)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
