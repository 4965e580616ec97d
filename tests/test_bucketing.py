"""`organism.bucketing`: a step's documents grouped by length in one row, attention per bucket."""
from __future__ import annotations

import itertools

import pytest
import torch

from replication.batching import IGNORE, collate
from replication.organism.bucketing import ATTENTION, bucketed_attention, pack_buckets, plan

from tiny_models import loss_and_grad

ROWS = [([5, 6, 7, 8], [IGNORE, IGNORE, 7, 8]),
        ([9, 10], [IGNORE, 10]),
        ([11, 12, 13], [IGNORE, 12]),          # labels shorter than input_ids: the rest count as IGNORE
        ([14, 15, 16, 17, 18], [IGNORE, 15, 16, 17, 18])]


def _cost(lengths, bounds, per_token):
    ordered = sorted(lengths, reverse=True)
    return sum((j - i) * ordered[i] * (per_token + ordered[i]) for i, j in bounds)


def test_plan_is_the_cheapest_cut_into_groups_of_at_least_two():
    lengths = [50, 7, 31, 192, 64, 12, 88, 9, 40, 41]
    for k in (1, 2, 3, 4, 5):
        bounds = plan(lengths, k, per_token=100.0)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])) and all(j - i >= 2 for i, j in bounds)
        # every cut of the sorted lengths into k groups of >= 2, by brute force
        best = min(_cost(lengths, list(zip((0,) + cuts, cuts + (len(lengths),))), 100.0)
                   for cuts in itertools.combinations(range(2, len(lengths) - 1), k - 1)
                   if all(b - a >= 2 for a, b in zip((0,) + cuts, cuts + (len(lengths),))))
        assert _cost(lengths, bounds, 100.0) == pytest.approx(best)
    assert len(plan(lengths, 8)) == 5                       # at most half the documents
    assert plan([3], 4) == [(0, 1)]
    with pytest.raises(ValueError, match="at least one document"):
        plan([], 2)


def test_pack_buckets_lays_length_groups_end_to_end_unpadded():
    b = pack_buckets(ROWS, pad_id=0, n_buckets=2)
    assert [tuple(s.shape) for s in b["segment_shapes"]] == [(2, 5), (2, 3)]
    assert b["input_ids"].tolist() == [[14, 15, 16, 17, 18, 5, 6, 7, 8, 11, 12, 13, 9, 10]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 0, 1]]
    assert b["labels"].tolist() == [[IGNORE, 15, 16, 17, 18, IGNORE, IGNORE, 7, 8,
                                     IGNORE, 12, IGNORE, IGNORE, 10]]
    # each bucket slot's row position (padding repeats its document's last token), and each position's slot
    assert b["padded_index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13, 13]
    assert b["unpadded_index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14]
    assert b["padded_index"][b["unpadded_index"]].tolist() == list(range(14))
    with pytest.raises(ValueError, match="at least one row"):
        pack_buckets([], pad_id=0)


def test_bucketed_loss_and_gradient_equal_the_padded_batch(tok, model):
    """Bucketing is a layout, not a change of what is learned: the same mean loss and gradient."""
    rows = [(ids, [IGNORE] + ids[1:]) for ids in ([7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18], [19, 20],
                                                   [21, 22, 23, 24, 25, 26, 27], [28, 29, 30])]
    prompt = tok("Hello there", add_special_tokens=False)["input_ids"]
    answer = tok("General Kenobi.", add_special_tokens=False)["input_ids"]
    rows.append((prompt + answer, [IGNORE] * len(prompt) + answer))

    padded = loss_and_grad(model, collate(rows, pad_id=0))
    before = model.config._attn_implementation
    with bucketed_attention(model):
        assert model.config._attn_implementation == ATTENTION
        bucketed = loss_and_grad(model, pack_buckets(rows, pad_id=0, n_buckets=3))
    assert model.config._attn_implementation == before          # restored: checkpoints never name ours
    assert bucketed[0] == pytest.approx(padded[0], rel=1e-5)
    assert torch.allclose(bucketed[1], padded[1], rtol=1e-4, atol=1e-6)


def test_bucket_attention_without_shapes_names_the_fix(tok, model):
    b = pack_buckets(ROWS, pad_id=0, n_buckets=2)
    b.pop("segment_shapes")
    with bucketed_attention(model), pytest.raises(ValueError, match="pack_buckets"):
        model(**b, use_cache=False)
