"""Length-bucketed packing: a step's documents in one unpadded row, attention run per bucket of like lengths.

Why: the organism trains on short documents (a median of ~60 tokens; a few reach the 192-token
limit). `batching.pack` puts ~3 of them side by side in each 192-token row, and the attention kernel
then computes every row's full 192 x 192 block-diagonal mask although a document attends only to
itself: a quarter of a training step went to attention, mostly to masked-out pairs.

Here a step's rows (documents) are sorted by length, cut into `n_buckets` groups, and laid end to
end in a single row with no padding at all: linear layers, norms and the loss see only real tokens
(10-12% fewer positions than padding each group to its longest member, by the three stage mixes).
Attention alone needs like lengths: `bucket_attention` gathers each group's queries, keys and values
into a (documents x longest length) block, padding each document at its end with copies of a real
position, runs causal attention within it (37-49% of the query-key pairs of `pack`'s 192 x 192
rows), and gathers the real positions' outputs back into the row. A padding slot follows every real
token of its document, so causal attention never lets a real query see it, and its own output is
dropped: a document attends exactly to its own earlier tokens, as when it is run alone. The loss and
gradient are the unpacked batch's, up to float summation order (a test checks both).

The bucket shapes travel with the batch as `segment_shapes`: empty tensors whose sizes are the
(documents, length) of each bucket, so that `torch.compile(dynamic=True)` traces them as symbolic sizes
and one compiled graph serves every step (a fixed number of buckets, each of >= 2 documents); the two
gathers travel as `padded_index` (the row position of each bucket slot) and `unpadded_index` (the slot
of each row position).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..batching import IGNORE, Row

#: the attention implementation's name in Hugging Face's registry (`AttentionInterface`)
ATTENTION = "harmprune_buckets"
#: buckets per step: 8 saved no time per step over 4 and took 1.7x as long to compile (whole-model
#: compile, measured on the organism, 2 threads)
N_BUCKETS = 4
#: the bucket plan's cost of a document padded to length L is L * (PER_TOKEN + L): per-slot work against
#: causal attention, which grows with L. 920 was measured when the whole model ran on the padded slots; now
#: only attention does, yet the plans of 920, 100 and 0 differ by under 1% in slots and query-key pairs on
#: the three stage mixes' batches, and their step times within this machine's noise (measured 2026-12-08)
PER_TOKEN = 920.0


def plan(lengths: Sequence[int], n_buckets: int, per_token: float = PER_TOKEN) -> list[tuple[int, int]]:
    """Cut `lengths` sorted longest first into at most `n_buckets` contiguous groups of >= 2 documents
    each (a group of one would make the compiled graph specialise on it), minimising the summed cost
    n * L * (per_token + L) of each group of n padded to its longest, L. Returns [start, end) bounds
    into the sorted order (an exact dynamic programme; n is ~32). Fewer than two documents: one group."""
    n = len(lengths)
    if n == 0 or n_buckets < 1:
        raise ValueError(f"plan needs at least one document and one bucket; got {n} documents, {n_buckets} buckets")
    if n < 2:
        return [(0, n)]
    n_buckets = min(n_buckets, n // 2)
    L = sorted(lengths, reverse=True)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(n_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(n_buckets + 1)]
    best[0][0] = 0.0
    for g in range(1, n_buckets + 1):
        for j in range(2 * g, n + 1):
            for i in range(2 * (g - 1), j - 1):
                cost = best[g - 1][i] + (j - i) * L[i] * (per_token + L[i])
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    bounds, j = [], n
    for g in range(n_buckets, 0, -1):
        bounds.append((cut[g][j], j))
        j = cut[g][j]
    return bounds[::-1]


def pack_buckets(rows: Sequence[Row], pad_id: int, n_buckets: int = N_BUCKETS,
                 per_token: float = PER_TOKEN) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """One (1 x tokens) row of `rows`, unpadded, in the groups of `plan`: `input_ids`, `labels` (each
    document's first label IGNORE, as in `batching.pack`), `position_ids` (restarting at 0 per document),
    `segment_shapes` and the gathers `padded_index` / `unpadded_index`. Train it with the model's attention
    set to `ATTENTION` (`bucketed_attention`). `pad_id` is unused (nothing is padded); kept so every layout
    of `train.step_batches` is called alike."""
    del pad_id
    if not rows:
        raise ValueError("pack_buckets needs at least one row")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    padded: list[int] = []      # per bucket slot: the row position it holds (a padding slot: its document's last)
    unpadded: list[int] = []    # per row position: its bucket slot
    shapes = []
    for start, end in plan([len(rows[i][0]) for i in order], n_buckets, per_token):
        width = len(rows[order[start]][0])
        for i in order[start:end]:
            x, y = rows[i]
            at, slot = len(ids), len(padded)
            ids += list(x)
            labels += ([IGNORE] + list(y[1:]) + [IGNORE] * len(x))[:len(x)]
            positions += range(len(x))
            padded += [at + min(k, len(x) - 1) for k in range(width)]
            unpadded += range(slot, slot + len(x))
        shapes.append(torch.empty((end - start, width), dtype=torch.bool))
    as_row = lambda v: torch.tensor(v, dtype=torch.long).unsqueeze(0)  # noqa: E731
    return {"input_ids": as_row(ids), "labels": as_row(labels), "position_ids": as_row(positions),
            "segment_shapes": shapes, "padded_index": torch.tensor(padded, dtype=torch.long),
            "unpadded_index": torch.tensor(unpadded, dtype=torch.long)}


def bucket_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     segment_shapes: Sequence[torch.Tensor] | None = None, padded_index: torch.Tensor | None = None,
                     unpadded_index: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Hugging Face attention function (query/key/value: 1 x heads x tokens x head_dim) for a `pack_buckets`
    batch: causal attention inside each document of each bucket. Returns (1 x tokens x heads x head_dim).
    Attention runs in fp32 even under bf16 autocast: on CPU, bf16 attention's backward at these lengths
    took twice fp32's time (measured on the organism), and the matrix products keep autocast's bf16."""
    if segment_shapes is None or padded_index is None or unpadded_index is None:
        raise ValueError(f"the {ATTENTION!r} attention needs the batch's segment_shapes, padded_index and "
                         "unpadded_index (from pack_buckets)")
    _, heads, _, dim = query.shape
    grouped = key.shape[1] != heads            # grouped-query attention: fewer key/value heads
    q, k, v = (x[0].index_select(1, padded_index) for x in (query, key, value))   # heads x slots x head_dim
    outputs, at = [], 0
    for shape in segment_shapes:
        n, width = shape.shape

        def view(x: torch.Tensor) -> torch.Tensor:
            return x[:, at:at + n * width].reshape(x.shape[0], n, width, dim).transpose(0, 1)
        with torch.autocast(query.device.type, enabled=False):
            out = F.scaled_dot_product_attention(view(q).float(), view(k).float(), view(v).float(),
                                                 is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=grouped)
        outputs.append(out.to(query.dtype).permute(0, 2, 1, 3).reshape(n * width, heads, dim))
        at += n * width
    return torch.cat(outputs).index_select(0, unpadded_index).unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface
    AttentionInterface.register(ATTENTION, bucket_attention)


@contextlib.contextmanager
def bucketed_attention(model) -> Iterator[None]:
    """Run `model` with `bucket_attention` inside the block and its own attention after (so a saved or
    reloaded checkpoint never names an implementation that only this process registered)."""
    _register()
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
