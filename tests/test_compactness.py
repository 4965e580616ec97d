"""Finding 1's experiment: the output schema, matched baselines, the headline rule."""
from __future__ import annotations

import pytest
import torch

from replication.experiments.compactness import (ARMS, CompactnessConfig, headline, matched_count_mask,
                                                 run_compactness, summarise)
from replication.findings import FINDINGS


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    cfg = CompactnessConfig.for_scale("organism-aligned", "smoke", qs=[0.05], seeds=[0, 1], n_calibration=8)
    cfg.n_eval = 1
    return run_compactness(cfg, write=False, progress=False)


def test_schema_is_complete(result):
    for key in ("finding", "model", "scale", "config", "p", "qs", "total_parameters", "decoder_linear_weights",
                "judge", "generation", "paper_settings", "arms", "baseline", "runs", "headline", "paper", "seconds"):
        assert key in result, key
    assert set(r["arm"] for r in result["runs"]) == set(ARMS)
    families = set(result["baseline"]["utility"])
    assert {"arithmetic", "units", "places", "recipes", "stories", "detection"} <= families
    for r in result["runs"]:
        assert {"arm", "seed", "q", "p", "count", "fraction", "harm_prefill", "utility"} <= set(r)
        assert set(r["utility"]) == families
        assert r["fraction"] == pytest.approx(r["count"] / result["total_parameters"])
        assert 0.0 <= r["harm_prefill"] <= 1.0
    assert all("harm_ra_prefill" in r for r in result["runs"] if r["arm"] == "btap")
    assert "harm_ra_prefill" in result["baseline"]
    for key in ("criterion", "smallest_fraction", "smallest_count", "targeted_vs_random", "best_harm_reduction"):
        assert key in result["headline"]
    measured, verdict = FINDINGS["compactness"].verdict(result)
    assert verdict in ("reproduced", "partly reproduced", "not reproduced", "not measurable") and measured


def test_baselines_prune_the_same_count_as_btap(result):
    for seed in (0, 1):
        counts = {r["arm"]: r["count"] for r in result["runs"] if r["seed"] == seed and r["arm"] in ("btap", "random", "control")}
        assert counts["btap"] > 0 and counts["btap"] == counts["random"] == counts["control"]
    assert len(summarise(result)) == len(ARMS) * len(result["qs"])


def test_matched_count_mask_respects_counts_and_protection():
    torch.manual_seed(0)
    prune = {"a": torch.randn(6, 5), "b": torch.randn(4, 4)}
    benign = {"a": torch.randn(6, 5), "b": torch.randn(4, 4)}
    mask = matched_count_mask(prune, benign, p=0.2, counts={"a": 4, "b": 2}, meta={})
    assert mask.counts() == {"a": 4, "b": 2}
    for name, s in prune.items():
        protected = set(torch.topk(benign[name].reshape(-1), int(0.2 * s.numel())).indices.tolist())
        chosen = set(mask.indices[name].tolist())
        assert not chosen & protected
        # the chosen are the most negative prune scores among the unprotected entries
        ranked = [i for i in torch.argsort(s.reshape(-1)).tolist() if i not in protected]
        assert chosen == set(ranked[: len(chosen)])


def test_headline_rule_on_hand_made_numbers():
    fams = {"arithmetic": 1.0, "detection": 1.0}
    def run(arm, q, harm, util, count):
        return {"arm": arm, "seed": 0, "q": q, "p": 0.01, "count": count, "fraction": count / 1000,
                "harm_prefill": harm, "utility": {k: util for k in fams}}
    res = {"baseline": {"harm_prefill": 1.0, "utility": dict(fams)},
           "runs": [run("btap", 1e-3, 0.5, 1.0, 10), run("random", 1e-3, 1.0, 1.0, 10),
                    run("btap", 1e-2, 0.1, 0.97, 50), run("random", 1e-2, 0.9, 1.0, 50),
                    run("btap", 1e-1, 0.0, 0.5, 200), run("random", 1e-1, 0.9, 1.0, 200)]}
    head = headline(res)
    assert head["smallest_count"] == 50 and head["q"] == 1e-2 and head["targeted_vs_random"] is True
    assert head["best_harm_reduction"] == pytest.approx(1.0)
    res["baseline"]["harm_prefill"] = 0.1
    assert headline(res)["smallest_fraction"] is None and "note" in headline(res)


def test_real_models_are_refused_with_a_clear_message():
    with pytest.raises(NotImplementedError, match="organism"):
        run_compactness(CompactnessConfig(model="smollm2-135m-instruct"), write=False, progress=False)
