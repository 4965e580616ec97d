"""Finding 2 on the shared layer: matrix shapes, equal counts, category exclusion, overlap baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from replication.experiments import generality
from replication.experiments import generality_render as view
from replication.experiments.generality import GeneralityConfig, category_passes, random_jaccard, run
from replication.findings import FINDINGS
from replication.pruning import Mask, jaccard


@pytest.fixture(scope="module")
def result():
    cfg = GeneralityConfig.for_scale("organism-aligned", "smoke")
    return run(cfg, write=False, progress=False)


def test_transfer_matrix_shape_and_equal_counts(result):
    cats = result["categories"]
    assert len(cats) == 5 and len(result["transfer"]) == len(cats) ** 2
    assert {(c["prune"], c["measured"]) for c in result["transfer"]} == {(a, b) for a in cats for b in cats}
    for seed in result["config"]["seeds"]:
        rows = [r for r in result["runs"] if r["seed"] == seed and r["kind"] in
                ("category", "leave_one_out", "random", "control")]
        assert len({r["count"] for r in rows}) == 1 and rows[0]["count"] > 0   # one budget for every prune set
    assert [r["category"] for r in result["leave_one_out"]] == cats
    assert view.transfer_frame(result).shape == (5, 5) and view.overlap_frame(result).shape == (6, 6)
    for r in result["leave_one_out"]:
        assert category_passes(r) in ("yes", "no", "undecided")
    measured, verdict = FINDINGS["generality"].verdict(result)
    assert verdict in ("reproduced", "inconclusive", "not reproduced", "not measurable") and measured


def test_budget_rule_is_stated(result):
    assert result["budget_search"] and "closest to 50%" in result["budget_rule"]
    assert result["q"] in [r["q"] for r in result["budget_search"]]


def test_category_prune_data_never_hold_the_measured_category():
    from replication.task_data import EvalSizes, TaskData, organism_task_data
    data = organism_task_data("organism-aligned", "smoke", EvalSizes(n_eval=2))
    for a in data.categories:
        prune = TaskData.sample(data.harmful([a]), 8, 0)
        assert {e.category for e in prune} == {a}
        measured = {e.prompt for e in data.test_harmful}
        assert not {e.prompt for e in prune} & measured


def test_jaccard_identical_is_one_disjoint_is_zero():
    a = Mask({"w": torch.tensor([0, 1, 2])}, {"w": (4, 4)}, None)
    b = Mask({"w": torch.tensor([5, 6, 7])}, {"w": (4, 4)}, None)
    assert jaccard(a, a) == 1.0 and jaccard(a, b) == 0.0


def test_random_overlap_baseline_matches_a_direct_computation():
    counts, shapes = {"a": 40, "b": 10}, {"a": (20, 20), "b": (10, 30)}
    expected = random_jaccard(counts, shapes)
    rng = np.random.default_rng(0)
    sims = []
    for _ in range(3000):
        inter = union = 0
        for k, n in ((40, 400), (10, 300)):
            x, y = set(rng.choice(n, k, replace=False)), set(rng.choice(n, k, replace=False))
            inter += len(x & y)
            union += len(x | y)
        sims.append(inter / union)
    assert expected == pytest.approx(np.mean(sims), rel=0.05)


def test_the_signed_scores_of_a_union_are_the_sum_of_its_parts():
    from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

    from replication.scoring import compute_scores
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    a, b = tiny_examples(3, seed=1), tiny_examples(2, seed=2)
    kw = dict(score="signed", role="prune", batch_size=1, progress=False)
    union = compute_scores(model, tok, a + b, **kw)
    summed = generality._sum_scores([compute_scores(model, tok, a, **kw), compute_scores(model, tok, b, **kw)])
    for k in union:
        assert torch.allclose(union[k], summed[k], rtol=1e-4, atol=1e-6)


def test_rendering(result):
    assert "closest to 50%" in view.setup_markdown(result)
    assert "smoke-scale" in view.reading(result)
    assert len(view.loo_table(result)) == 5 and len(view.utility_table(result)) >= 8
