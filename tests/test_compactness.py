"""Finding 1's experiment: the output schema, matched baselines, the headline rule; the organism
path and the real-model path (a tiny random Llama with injected data, no SmolLM2, no network)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

from replication.data import Example
from replication.experiments import compactness
from replication.experiments.compactness import (ARMS, CompactnessConfig, Data, headline, matched_count_mask,
                                                 run_compactness, summarise)
from replication.findings import FINDINGS
from replication.models import PRESETS, LoadedModel, Preset


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


def test_organism_rendering_names_its_exact_judge(result):
    summary = pd.DataFrame(summarise(result))
    assert "exact judge" in compactness.measures_markdown(result)
    assert "organism" in compactness.differences(result) and "StrongREJECT" in compactness.differences(result)
    assert compactness.axis_labels(result)["harm_label"] == "harmfulness (exact judge)"
    assert "smoke-scale" in compactness.reading(result, summary)
    assert set(compactness.baseline_rows(result)) >= {"harmfulness, prefilling", "utility: detection"}


# ------------------------------------------------------------------------------------------------
# real models
# ------------------------------------------------------------------------------------------------

TINY = "tiny/llama"


def tiny_loaded() -> LoadedModel:
    tok = tiny_tokenizer()
    return LoadedModel(TINY, tiny_llama(len(tok), seed=3), tok,
                       Preset(TINY, "hub", p=0.01, q=0.01, score_batch_size=4, gen_batch_size=8))


def tiny_data(n_refusals: int = 6) -> Data:
    harmful = tiny_examples(12, kind="harmful", min_words=14, max_words=20)
    benign = tiny_examples(12, kind="benign", seed=1, min_words=4)
    for i, e in enumerate(benign):
        e.category = f"family{i % 3}"
    refusals = [Example(prompt=e.prompt, response="I'm sorry, I cannot help with that.", kind="harmful")
                for e in harmful[:n_refusals]]
    trivia = [Example(prompt=f"What is the capital of land {i}?", response="Paris is the capital.", kind="control",
                      category="trivia", meta={"answers": ["paris"], "correct": True}) for i in range(8)]
    return Data(harmful_pool=harmful[:8], benign_pool=benign[:8], control_pool=trivia[:6], refusal_pool=refusals,
                test_harmful=harmful[8:], test_benign=benign[8:], test_detection=[], judge="reference_nll", kind="real",
                test_trivia=trivia[6:], info={"reference_model": TINY, "reference_rule": "test"})


def _zeros(model) -> int:
    from replication.scoring import decoder_linears
    return sum(int((m.weight == 0).sum()) for m in decoder_linears(model).values())


@pytest.fixture(scope="module")
def real_result():
    """A real-model sweep at smoke scale; records how many decoder weights are zero in each evaluation."""
    loaded = tiny_loaded()
    seen_zeros: list[int] = []
    original = compactness.evaluate_real_state

    def spy(loaded_, data, cfg, **kw):
        seen_zeros.append(_zeros(loaded_.model))
        return original(loaded_, data, cfg, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(compactness, "evaluate_real_state", spy)
    try:
        cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.02, 0.05], seeds=[0, 1], judge="reference_nll",
                                          min_refusals=2)
        res = run_compactness(cfg, loaded=loaded, data=tiny_data(), write=False, progress=False)
    finally:
        mp.undo()
    return res, seen_zeros, loaded


def test_real_path_schema_and_judges(real_result):
    res, _, _ = real_result
    for key in ("finding", "model", "scale", "config", "p", "qs", "total_parameters", "decoder_linear_weights",
                "judge", "judges", "utility_judges", "measures", "data", "refusal_ablation", "generation",
                "paper_settings", "arms", "baseline", "runs", "headline", "paper", "seconds"):
        assert key in res, key
    assert res["kind"] == "real" and res["judge"] == "reference_nll" and res["config"]["judge"] == "reference_nll"
    assert set(r["arm"] for r in res["runs"]) == set(ARMS)
    base = res["baseline"]
    # every number a state reports names its judge
    assert set(res["utility_judges"]) == set(base["utility"])
    assert res["utility_judges"]["trivia_qa"] == "substring_match"
    assert res["utility_judges"]["no_over_refusal"] == "keyword_overrefusal"
    assert {res["utility_judges"][f] for f in ("family0", "family1", "family2")} == {"reference_nll"}
    harm_keys = {k for r in res["runs"] + [base] for k in r if k.startswith(("harm_", "refusal_"))
                 and not k.endswith("_by_category")}
    assert harm_keys <= set(res["judges"]), harm_keys - set(res["judges"])
    assert res["judges"]["refusal_prefill"] == "keyword_refusal" and res["judges"]["harm_prefill_nll"] == "reference_nll"
    for r in [base] + res["runs"]:
        assert 0.0 <= r["harm_prefill"] <= 1.0 and r["harm_prefill_nll"] > 0
        assert all(0.0 <= v <= 1.0 for v in r["utility"].values())
    assert base["utility"]["no_over_refusal"] == 1.0 - base["overrefusal"]
    assert set(base["utility_nll"]) == {"family0", "family1", "family2"}
    # secondary arms are forward-only: no generation-based measures
    for r in res["runs"]:
        full = r["arm"] not in res["forward_only_arms"]
        assert ("trivia_qa" in r["utility"]) == full and ("refusal_prefill" in r) == full
    assert res["refusal_ablation"]["used"] and res["refusal_ablation_count"] > 0
    assert all("harm_ra_prefill" in r for r in res["runs"] if r["arm"] == "btap") and "harm_ra_prefill" in base
    measured, verdict = FINDINGS["compactness"].verdict(res)
    assert verdict in ("reproduced", "partly reproduced", "not reproduced", "not measurable") and measured


def test_real_path_counts_fractions_and_zeroed_weights(real_result):
    res, seen_zeros, loaded = real_result
    total = sum(p.numel() for p in loaded.model.parameters())
    assert res["total_parameters"] == total
    for seed in (0, 1):
        for q in res["qs"]:
            counts = {r["arm"]: r["count"] for r in res["runs"] if r["seed"] == seed and r["q"] == q
                      and r["arm"] in ("btap", "random", "control")}
            assert counts["btap"] > 0 and counts["btap"] == counts["random"] == counts["control"]
    for r in res["runs"]:
        assert r["fraction"] == pytest.approx(r["count"] / total)
    # the baseline is evaluated unpruned; then every evaluated state had exactly its count of weights at zero
    assert seen_zeros[0] == 0
    evaluated = [r["count"] for r in res["runs"] if not r["reused_evaluation"]]
    assert len(evaluated) + res["evaluations_reused"] == len(res["runs"])
    assert seen_zeros[1:] == evaluated and max(evaluated) > 0
    assert _zeros(loaded.model) == 0   # restored after the sweep
    assert len(summarise(res)) == len(ARMS) * len(res["qs"])
    d = res["data"]
    assert d["test_harmful"] == 4 and d["test_benign"] == 4 and d["test_trivia"] == 2
    assert d["calibration_per_seed"] == {"harmful": 4, "benign": 4, "control": 4}


def test_real_path_rendering_names_judges_and_measures(real_result):
    res, _, _ = real_result
    summary = pd.DataFrame(summarise(res))
    text = compactness.measures_markdown(res)
    assert "reference_nll" in text and "substring_match" in text and "keyword_overrefusal" in text
    assert "organism" not in text.lower()
    assert "organism" not in compactness.differences(res).lower()
    assert "organism" not in compactness.reading(res, summary).lower()
    assert "reference_nll" in compactness.axis_labels(res)["harm_label"]
    rows = compactness.baseline_rows(res)
    assert all("[" in k for k in rows)      # every unpruned number is labelled with its judge
    assert compactness.headline_rows(res)["harm judge"] == "reference_nll"


def test_refusal_ablation_is_skipped_and_recorded_without_enough_refusals():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0], judge="reference_nll", ablations=False)
    res = run_compactness(cfg, loaded=tiny_loaded(), data=tiny_data(n_refusals=1), write=False, progress=False)
    ra = res["refusal_ablation"]
    assert ra["used"] is False and "refused only 1" in ra["skipped_because"] and res["refusal_ablation_count"] is None
    assert not any("harm_ra_prefill" in r for r in res["runs"] + [res["baseline"]])
    assert "not run" in compactness.measures_markdown(res)


def test_masks_that_zero_nothing_reuse_the_baseline():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[1e-4], seeds=[0], judge="reference_nll", ablations=False,
                                      refusal_ablation=False)
    res = run_compactness(cfg, loaded=tiny_loaded(), data=tiny_data(), write=False, progress=False)
    assert [r["count"] for r in res["runs"]] == [0, 0, 0] and all(r["reused_evaluation"] for r in res["runs"])
    assert all(r["harm_prefill"] == res["baseline"]["harm_prefill"] for r in res["runs"])
    control = next(r for r in res["runs"] if r["arm"] == "control")   # forward-only view of the baseline
    assert "trivia_qa" not in control["utility"] and "refusal_prefill" not in control
    assert "switched off" in res["refusal_ablation"]["skipped_because"]


def test_real_path_with_an_injected_strongreject_standin_labels_it():
    from replication.judges import StrongRejectJudge
    loaded = tiny_loaded()
    data = tiny_data()
    with pytest.warns(UserWarning, match="not the paper's StrongREJECT"):
        data.judge = StrongRejectJudge(model=tiny_llama(len(loaded.tokenizer), seed=5), tokenizer=loaded.tokenizer)
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0], judge="strongreject", ablations=False,
                                      min_refusals=2)
    res = run_compactness(cfg, loaded=loaded, data=data, write=False, progress=False)
    assert res["judge"].startswith("strongreject-standin:") and res["judges"]["harm_prefill"] == res["judge"]
    assert res["judges"]["harm_prefill_nll"] == "reference_nll" and "StrongREJECT score" in res["measures"]["harm"]
    control = next(r for r in res["runs"] if r["arm"] == "control")
    assert "refusal_prefill" in control and 0.0 <= control["harm_prefill"] <= 1.0   # StrongREJECT reads generations
    assert "trivia_qa" not in control["utility"]


def test_data_kind_must_match_the_model():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0])
    data = tiny_data()
    data.kind = "organism"
    with pytest.raises(ValueError, match="real model"):
        run_compactness(cfg, loaded=tiny_loaded(), data=data, write=False, progress=False)


def test_judge_choice_is_offline_by_default(monkeypatch):
    import replication.judges as judges
    monkeypatch.setattr(judges, "_hub_cached", lambda repo, cache_dir=None: False)
    assert compactness.resolve_judge("auto") == "reference_nll"
    monkeypatch.setattr(judges, "_hub_cached", lambda repo, cache_dir=None: True)
    assert compactness.resolve_judge("auto") == "strongreject"
    assert compactness.resolve_judge("reference_nll") == "reference_nll"
    with pytest.raises(ValueError, match="unknown compactness judge"):
        compactness.resolve_judge("gpt4")


def test_real_scale_sizes_and_reference_models():
    full = CompactnessConfig.for_scale("smollm2-135m-instruct-safety", "full")
    assert full.seeds == [0, 1, 2] and 64 <= full.n_calibration < 400 and full.judge == "auto"
    assert full.qs is None                     # default_qs: 8 log-spaced values suited to the model
    qs = compactness.default_qs(LoadedModel("smollm2-135m-instruct", None, None, PRESETS["smollm2-135m-instruct"]))
    assert len(qs) >= 8 and qs[0] == pytest.approx(1e-5) and qs[-1] == pytest.approx(3e-3)
    smoke = CompactnessConfig.for_scale("smollm2-135m-instruct", "smoke")
    assert smoke.n_calibration < full.n_calibration and smoke.data_chunk
    org = CompactnessConfig.for_scale("organism-aligned", "full")
    assert org.n_calibration == 400 and org.forward_only_arms == []
    ref = lambda name: compactness.reference_model_for(LoadedModel(name, None, None, PRESETS[name]))[0]  # noqa: E731
    assert ref("smollm2-135m-instruct-safety") == "smollm2-135m-instruct"
    assert ref("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert ref("llama-3.1-8b-instruct") == "llama-3.1-8b"
    assert ref("mistral-7b-instruct-v0.3") == "mistral-7b-instruct-v0.3"
