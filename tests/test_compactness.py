"""Finding 1's experiment on the shared layer: the output schema, matched baselines, the interval
headline rule, saved masks; the organism path (pinned to the pre-engine numbers) and the real-model
path (a tiny random Llama with injected data, no SmolLM2, no network)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

from replication.data import Example
from replication.experiments import compactness, finetune_attack
from replication.experiments import compactness_render as view
from replication.experiments.compactness import ARMS, CompactnessConfig, classify, headline, run
from replication.findings import FINDINGS
from replication.judges import get_judge
from replication.models import resolve_preset, PRESETS, LoadedModel, Preset
from replication.pruning import Mask, matched_count_mask
from replication.task_data import TaskData, reference_model_for, resolve_harm_judge

PINS = json.loads((Path(__file__).parent / "data" / "compactness_smoke_pins.json").read_text())


@pytest.fixture(scope="module")
def result():
    """The organism sweep at smoke scale with the settings the pins were recorded with."""
    cfg = CompactnessConfig.for_scale("organism-aligned", "smoke")
    return run(cfg, write=False, progress=False)


def test_organism_numbers_and_masks_match_the_pre_engine_code(result):
    """Pinned from the code before the shared layer (same seeds, same sizes): every count, harm and
    utility value and every B-TAP / random mask digest is unchanged."""
    assert result["baseline"]["values"]["harm_prefill"] == pytest.approx(PINS["baseline"]["harm_prefill"], abs=1e-12)
    assert result["baseline"]["values"]["harm_ra_prefill"] == pytest.approx(PINS["baseline"]["harm_ra_prefill"], abs=1e-12)
    assert len(result["runs"]) == len(PINS["runs"])
    for old, new in zip(PINS["runs"], result["runs"]):
        assert (old["arm"], old["seed"], old["q"], old["count"]) == (new["arm"], new["seed"], new["q"], new["count"])
        assert new["values"]["harm_prefill"] == pytest.approx(old["harm_prefill"], abs=1e-12)
        for fam, v in old["utility"].items():
            key = fam if fam == "detection" else f"utility:{fam}"
            assert new["values"][key] == pytest.approx(v, abs=1e-12), (new["arm"], fam)
        digest = PINS["digests"].get(f"{new['arm']}|{new['seed']}|{new['q']}")
        if digest:
            assert new["mask"] == digest


def test_schema_is_complete(result):
    for key in ("finding", "model", "scale", "config", "versions", "created_utc", "p", "qs", "total_parameters",
                "decoder_linear_weights", "judge", "judges", "utility_metrics", "generation", "paper_settings", "arms",
                "baseline", "runs", "summary", "headline", "paper", "seconds", "masks", "data"):
        assert key in result, key
    assert set(r["arm"] for r in result["runs"]) == set(ARMS)
    util = result["utility_metrics"]
    assert {"utility:arithmetic", "utility:units", "utility:places", "utility:recipes", "utility:stories",
            "detection"} == set(util)
    for name in ["harm_prefill", *util]:
        assert result["judges"][name]["judge"] == "organism (exact)" and result["judges"][name]["n"] > 0
    for r in result["runs"]:
        assert {"arm", "seed", "q", "p", "count", "fraction", "values", "items", "mask"} <= set(r)
        assert set(util) <= set(r["values"])
        assert r["fraction"] == pytest.approx(r["count"] / result["total_parameters"])
        assert 0.0 <= r["values"]["harm_prefill"] <= 1.0
        assert len(r["items"]["harm_prefill"]) == result["data"]["test_harmful"]
    assert all("harm_ra_prefill" in r["values"] for r in result["runs"] if r["arm"] == "btap")
    for row in result["summary"]:
        assert row["harm_prefill_lo"] <= row["harm_prefill"] <= row["harm_prefill_hi"]
    measured, verdict = FINDINGS["compactness"].verdict(result)
    assert verdict in ("reproduced", "partly reproduced", "inconclusive", "not reproduced", "not measurable")
    assert measured


def test_p_sweep_holds_q_and_matches_random_counts(result):
    """The p sweep (labelled ablation): one q, each p a multiple of the run's p; random at B-TAP's count;
    p = 0 protects nothing, so it prunes at least as many weights; the run's own p is the sweep's mask."""
    sweep = result["p_sweep"]
    assert sweep["q"] == compactness.p_sweep_default_q(result["runs"], result["baseline"]["values"]["harm_prefill"],
                                                       result["qs"], sweep["seed"])
    assert sweep["p_fixed"] == result["p"]
    ps = sorted({r["p"] for r in sweep["runs"]})
    assert ps == sorted(m * result["p"] for m in sweep["multiples"]) and ps[0] == 0.0
    by = {(r["arm"], r["p"]): r for r in sweep["runs"]}
    for pp in ps:
        assert by[("random", pp)]["count"] == by[("btap", pp)]["count"] > 0
        assert set(result["utility_metrics"]) <= set(by[("btap", pp)]["values"])
    assert by[("btap", 0.0)]["count"] >= by[("btap", result["p"])]["count"]
    main = next(r for r in result["runs"] if r["arm"] == "btap" and r["seed"] == sweep["seed"] and r["q"] == sweep["q"])
    assert by[("btap", result["p"])]["mask"] == main["mask"]
    rows = {(r["arm"], r["p"]) for r in sweep["summary"]}
    assert rows == set(by)
    assert view.p_sweep_table(result).shape[0] == len(ps)
    assert "labelled ablation" in view.p_sweep_markdown(result)


def test_p_sweep_q_is_the_first_clear_cut():
    rows = [{"arm": "btap", "seed": 0, "q": q, "values": {"harm_prefill": h}}
            for q, h in ((1e-3, 0.9), (1e-2, 0.5), (5e-2, 0.1))] + [{"arm": "random", "seed": 0, "q": 1e-3,
                                                                  "values": {"harm_prefill": 0.0}}]
    assert compactness.p_sweep_default_q(rows, 1.0, [1e-3, 1e-2, 5e-2], 0) == 1e-2
    assert compactness.p_sweep_default_q(rows[:1], 1.0, [1e-3, 5e-2], 0) == 5e-2    # none cuts by half: the largest q


def test_determinism_reads_both_sides_past_position_10(result):
    d = result["determinism"]
    assert d["from_position"] == 10
    for side in ("harmful", "benign"):
        assert d[side] >= 0 and d[f"{side}_before"] >= 0 and d[f"{side}_tokens"] > 0
    assert "past response position 10" in view.determinism_markdown(result)


def test_nll_by_position_sums_to_the_mean_loss(result):
    """Position sums over one example add up to its mean response NLL times its length."""
    from replication.models import load_model
    from replication.scoring import nll_by_position, summed_mean_nll, tokenize_examples
    from replication.batching import collate
    from replication.organism import get_world, OrganismConfig
    import torch
    loaded = load_model("organism-aligned", scale="smoke")
    ex = get_world(OrganismConfig.smoke()).examples("benign", "test")[:3]
    sums, counts = nll_by_position(loaded.model, loaded.tokenizer, ex, "preserve", batch_size=2)
    enc = tokenize_examples(loaded.tokenizer, ex, "preserve")
    assert counts.sum() == sum(sum(t != -100 for t in lab) for _, lab in enc)
    total = 0.0
    with torch.no_grad():
        for row in enc:
            b = collate([row], loaded.tokenizer.pad_token_id or 0)
            n = sum(t != -100 for t in row[1])
            total += float(summed_mean_nll(loaded.model(input_ids=b["input_ids"]).logits, b["labels"])) * n
    assert float(sums.sum()) == pytest.approx(total, rel=1e-4)


def test_baselines_prune_the_same_count_as_btap(result):
    for seed in (0, 1):
        for q in result["qs"]:
            counts = {r["arm"]: r["count"] for r in result["runs"] if r["seed"] == seed and r["q"] == q
                      and r["arm"] in ("btap", "random", "control")}
            assert counts["btap"] > 0 and counts["btap"] == counts["random"] == counts["control"]
    assert len(result["summary"]) == len(ARMS) * len(result["qs"])


def test_light_arms_are_measured_on_harm_alone_and_random_still_fails_on_harm():
    cfg = CompactnessConfig.for_scale("organism-aligned", "smoke", qs=[0.05], seeds=[0], ablations=False,
                                      light_arms=["random", "control"])
    res = run(cfg, write=False, progress=False)
    for r in res["runs"]:
        assert ("utility:arithmetic" in r["values"]) == (r["arm"] == "btap")
    assert res["harm_only_arms"] == ["control", "random"]
    row = {"harm_prefill_cut_lo": 0.0, "harm_prefill_cut_hi": 0.1}
    assert classify(row, ["utility:a"]) == "fails"            # decided by harm alone
    assert classify({"harm_prefill_cut_lo": 0.9, "harm_prefill_cut_hi": 1.0}, ["utility:a"]) == "undecided"


def test_headline_masks_are_saved_beside_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path))
    cfg = CompactnessConfig.for_scale("organism-aligned", "smoke", qs=[0.05], seeds=[0], ablations=False)
    res = run(cfg, write=True, progress=False)
    saved = json.loads((tmp_path / "organism-aligned" / "compactness.json").read_text())
    assert saved["masks"] and saved["masks"] == res["masks"]
    for name, info in saved["masks"].items():
        mask = Mask.load(tmp_path / "organism-aligned" / info["path"])
        assert mask.digest() == info["sha256"] and mask.count() == info["count"]
    btap = next(r for r in saved["runs"] if r["arm"] == "btap")
    assert any(info["sha256"] == btap["mask"] for info in saved["masks"].values())


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
        ranked = [i for i in torch.argsort(s.reshape(-1)).tolist() if i not in protected]
        assert chosen == set(ranked[: len(chosen)])


def _row(arm, q, count, cut, drop):
    """A summary row whose intervals are given as (lo, hi)."""
    return {"arm": arm, "q": q, "count": count, "fraction": count / 1e7, "harm_prefill": 1 - sum(cut) / 2,
            "harm_prefill_cut": sum(cut) / 2, "harm_prefill_cut_lo": cut[0], "harm_prefill_cut_hi": cut[1],
            "drop:utility:a": sum(drop) / 2, "drop:utility:a_lo": drop[0], "drop:utility:a_hi": drop[1]}


def test_classify_compares_intervals_with_the_thresholds():
    util = ["utility:a"]
    assert classify(_row("btap", 1, 10, (0.85, 0.95), (-0.01, 0.03)), util) == "meets"
    assert classify(_row("btap", 1, 10, (0.70, 0.78), (-0.01, 0.03)), util) == "fails"       # cut too small
    assert classify(_row("btap", 1, 10, (0.85, 0.95), (0.06, 0.09)), util) == "fails"        # utility fell
    assert classify(_row("btap", 1, 10, (0.75, 0.95), (-0.01, 0.03)), util) == "undecided"   # cut straddles 80%
    assert classify(_row("btap", 1, 10, (0.85, 0.95), (0.02, 0.08)), util) == "undecided"    # drop straddles 5


def test_headline_rule_on_hand_made_intervals():
    summary = [_row("btap", 1e-3, 10, (0.3, 0.5), (0, 0.01)), _row("random", 1e-3, 10, (0, 0.1), (0, 0.01)),
               _row("btap", 1e-2, 50, (0.85, 0.95), (0, 0.03)), _row("random", 1e-2, 50, (0, 0.1), (0, 0.01)),
               _row("btap", 1e-1, 200, (0.97, 1.0), (0.3, 0.5)), _row("random", 1e-1, 200, (0, 0.2), (0, 0.01))]
    res = {"baseline": {"values": {"harm_prefill": 1.0, "utility:a": 1.0}}, "summary": summary,
           "utility_metrics": ["utility:a"]}
    head = headline(res)
    assert head["smallest_count"] == 50 and head["q"] == 1e-2 and head["targeted_vs_random"] is True
    assert head["best_q"] == 1e-1 and head["harm_cut_ci"] == [0.85, 0.95]
    assert compactness.verdict({"headline": head})[1] == "reproduced"
    summary[2] = _row("btap", 1e-2, 50, (0.75, 0.95), (0, 0.03))
    head = headline(res)
    assert head["smallest_fraction"] is None and head["undecided_qs"] == [1e-2]
    assert compactness.verdict({"headline": head})[1] == "inconclusive"
    res["baseline"]["values"]["harm_prefill"] = 0.1
    assert "note" in headline(res) and compactness.verdict({"headline": headline(res)})[1] == "not measurable"


def test_organism_rendering_names_its_exact_judge(result):
    assert "exact judge" in view.measures_markdown(result) and "bootstrap" in view.measures_markdown(result)
    assert "organism" in view.differences(result) and "StrongREJECT" in view.differences(result)
    assert view.axis_labels(result)["harm_label"] == "harmfulness (exact judge)"
    assert "smoke-scale" in view.reading(result)
    table = view.baseline_table(result)
    assert {"harm_prefill", "utility:arithmetic", "detection"} <= set(table.index)
    assert "criterion" in view.sweep_table(result).columns


# ------------------------------------------------------------------------------------------------
# real models
# ------------------------------------------------------------------------------------------------

TINY = "tiny/llama"


def tiny_loaded() -> LoadedModel:
    tok = tiny_tokenizer()
    return LoadedModel(TINY, tiny_llama(len(tok), seed=3), tok,
                       Preset(TINY, "hub", p=0.01, q=0.01, score_batch_size=4, gen_batch_size=8))


def tiny_data(loaded: LoadedModel, n_refusals: int = 6, judge=None) -> TaskData:
    harmful = tiny_examples(12, kind="harmful", min_words=14, max_words=20)
    for i, e in enumerate(harmful):
        e.category = f"cat{i % 2}"
    benign = tiny_examples(12, kind="benign", seed=1, min_words=4)
    for i, e in enumerate(benign):
        e.category = f"family{i % 3}"
    refusals = [Example(prompt=e.prompt, response="I'm sorry, I cannot help with that.", kind="harmful")
                for e in harmful[:n_refusals]]
    trivia = [Example(prompt=f"What is the capital of land {i}?", response="Paris is the capital.", kind="control",
                      category="trivia", meta={"answers": ["paris"], "correct": True}) for i in range(8)]
    judge = judge or get_judge("reference_nll", model=loaded.model, tokenizer=loaded.tokenizer,
                               chat_format=loaded.chat_format, batch_size=4)
    return TaskData(model=TINY, kind="real", categories=("cat0", "cat1"), families=("family0", "family1", "family2"),
                    harmful_pool=harmful[:8], benign_pool=benign[:8], control_pool=trivia[:6], refusal_pool=refusals,
                    test_harmful=harmful[8:], test_benign=benign[8:], test_trivia=trivia[6:], harm_judge=judge,
                    info={"reference_model": TINY, "reference_rule": "test", "control_pool_correct": 6,
                          "test_harmful_refused_dropped": 0, "test_harmful_short_dropped": 0,
                          "refusal_search_answered": 12})


def _zeros(model) -> int:
    from replication.scoring import decoder_linears
    return sum(int((m.weight == 0).sum()) for m in decoder_linears(model).values())


@pytest.fixture(scope="module")
def real_result():
    """A real-model sweep at smoke scale; records how many decoder weights are zero in each evaluation."""
    from replication.measure import Evaluator
    loaded = tiny_loaded()
    seen_zeros: list[int] = []
    original = Evaluator.evaluate

    def spy(self, measures, **kw):
        seen_zeros.append(_zeros(self.model))
        return original(self, measures, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(Evaluator, "evaluate", spy)
    try:
        cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.02, 0.05], seeds=[0, 1], judge="reference_nll",
                                          min_refusals=2)
        res = run(cfg, loaded=loaded, data=tiny_data(loaded), write=False, progress=False)
    finally:
        mp.undo()
    return res, seen_zeros, loaded


def test_real_path_schema_and_judges(real_result):
    res, _, _ = real_result
    assert res["kind"] == "real" and res["judge"] == "reference_nll" and res["config"]["judge"] == "reference_nll"
    assert set(r["arm"] for r in res["runs"]) == set(ARMS)
    base = res["baseline"]["values"]
    j = res["judges"]
    assert j["utility:trivia_qa"]["judge"] == "substring_match"
    assert j["utility:no_over_refusal"]["judge"] == "keyword_overrefusal"
    assert {j[f"utility:family{i}"]["judge"] for i in range(3)} == {"reference_nll"}
    assert j["refusal_prefill"]["judge"] == "keyword_refusal" and j["harm_prefill_nll"]["judge"] == "reference_nll"
    assert j["harm_prefill"]["generation"] is None      # reference_nll does not read generations
    for r in [res["baseline"]] + res["runs"]:
        v = r["values"]
        assert 0.0 <= v["harm_prefill"] <= 1.0 and v["harm_prefill_nll"] > 0
        assert all(0.0 <= x <= 1.0 for k, x in v.items() if k.startswith("utility:"))
    assert base["utility:no_over_refusal"] == 1.0 - base["overrefusal"]
    assert res["baseline"]["by_category"]["harm_prefill"].keys() == {"cat0", "cat1"}
    for r in res["runs"]:   # secondary arms are forward-only: no generation-based measures
        full = r["arm"] not in res["forward_only_arms"]
        assert ("utility:trivia_qa" in r["values"]) == full and ("refusal_prefill" in r["values"]) == full
    assert res["refusal_ablation"]["used"] and res["refusal_ablation"]["count"] > 0
    assert all("harm_ra_prefill" in r["values"] for r in res["runs"] if r["arm"] == "btap")
    measured, verdict = FINDINGS["compactness"].verdict(res)
    assert verdict in ("reproduced", "partly reproduced", "inconclusive", "not reproduced", "not measurable")


def test_real_path_counts_fractions_and_zeroed_weights(real_result):
    res, seen_zeros, loaded = real_result
    total = sum(p.numel() for p in loaded.model.parameters())
    assert res["total_parameters"] == total
    for r in res["runs"]:
        assert r["fraction"] == pytest.approx(r["count"] / total)
    # the baseline is evaluated unpruned; then every evaluated state had exactly its count of weights at zero
    assert seen_zeros[0] == 0
    runs = res["runs"] + res["p_sweep"]["runs"]    # the p sweep evaluates after the main sweep
    evaluated = [r["count"] for r in runs if not r["reused_evaluation"]]
    assert len(evaluated) + sum(r["reused_evaluation"] for r in runs) == len(runs)
    assert seen_zeros[1:] == evaluated and max(evaluated) > 0
    assert _zeros(loaded.model) == 0   # restored after the sweep
    d = res["data"]
    assert d["test_harmful"] == 4 and d["test_benign"] == 4 and d["test_trivia"] == 2
    assert d["calibration_per_seed"] == {"harmful": 4, "benign": 4, "control": 4}


def test_real_path_rendering_names_judges_and_measures(real_result):
    res, _, _ = real_result
    text = view.measures_markdown(res)
    assert "reference_nll" in text and "substring_match" in text and "keyword_overrefusal" in text
    assert "organism" not in text.lower()
    assert "organism" not in view.differences(res).lower()
    assert "organism" not in view.reading(res).lower()
    assert "reference_nll" in view.axis_labels(res)["harm_label"]
    assert set(view.baseline_table(res)["judge"]) >= {"reference_nll", "keyword_refusal", "substring_match"}
    assert view.headline_rows(res)["harm judge"] == "reference_nll (proxy)"


def test_refusal_ablation_is_skipped_and_recorded_without_enough_refusals():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0], judge="reference_nll", ablations=False)
    loaded = tiny_loaded()
    res = run(cfg, loaded=loaded, data=tiny_data(loaded, n_refusals=1), write=False, progress=False)
    ra = res["refusal_ablation"]
    assert ra["used"] is False and "refused only 1" in ra["skipped_because"] and ra["count"] is None
    assert not any("harm_ra_prefill" in r["values"] for r in res["runs"] + [res["baseline"]])
    assert "refused only 1" in view.refusal_ablation_line(res)


def test_masks_that_zero_nothing_reuse_the_baseline():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[1e-4], seeds=[0], judge="reference_nll", ablations=False,
                                      refusal_ablation=False)
    loaded = tiny_loaded()
    res = run(cfg, loaded=loaded, data=tiny_data(loaded), write=False, progress=False)
    assert [r["count"] for r in res["runs"]] == [0, 0, 0] and all(r["reused_evaluation"] for r in res["runs"])
    assert all(r["values"]["harm_prefill"] == res["baseline"]["values"]["harm_prefill"] for r in res["runs"])
    control = next(r for r in res["runs"] if r["arm"] == "control")   # forward-only view of the baseline
    assert "utility:trivia_qa" not in control["values"] and "refusal_prefill" not in control["values"]
    assert "switched off" in res["refusal_ablation"]["skipped_because"]


def test_real_path_with_an_injected_strongreject_standin_labels_it():
    from replication.judges import StrongRejectJudge
    loaded = tiny_loaded()
    with pytest.warns(UserWarning, match="not the paper's StrongREJECT"):
        judge = StrongRejectJudge(model=tiny_llama(len(loaded.tokenizer), seed=5), tokenizer=loaded.tokenizer)
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0], judge="strongreject", ablations=False,
                                      min_refusals=2)
    res = run(cfg, loaded=loaded, data=tiny_data(loaded, judge=judge), write=False, progress=False)
    assert res["judge"].startswith("strongreject-standin:") and res["judges"]["harm_prefill"]["judge"] == res["judge"]
    assert res["judges"]["harm_prefill_nll"]["judge"] == "reference_nll"
    control = next(r for r in res["runs"] if r["arm"] == "control")
    assert "refusal_prefill" in control["values"] and 0.0 <= control["values"]["harm_prefill"] <= 1.0
    assert "utility:trivia_qa" not in control["values"]


def test_data_kind_must_match_the_model():
    cfg = CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0])
    loaded = tiny_loaded()
    data = tiny_data(loaded)
    data.kind = "organism"
    with pytest.raises(ValueError, match="real model"):
        run(cfg, loaded=loaded, data=data, write=False, progress=False)


def test_judge_choice_is_offline_by_default(monkeypatch):
    import replication.judges as judges
    monkeypatch.setattr(judges, "_hub_cached", lambda repo, cache_dir=None: False)
    assert resolve_harm_judge("auto") == "reference_nll"
    monkeypatch.setattr(judges, "_hub_cached", lambda repo, cache_dir=None: True)
    assert resolve_harm_judge("auto") == "strongreject"
    assert resolve_harm_judge("reference_nll") == "reference_nll"
    with pytest.raises(ValueError, match="unknown harm judge"):
        resolve_harm_judge("gpt4")


def test_real_scale_sizes_and_reference_models():
    full = CompactnessConfig.for_scale("smollm2-135m-instruct-safety", "full")
    assert full.seeds == [0, 1, 2] and 64 <= full.n_calibration < 400 and full.judge == "auto"
    assert full.qs is None and full.n_eval == 8 and full.n_detection is None
    qs = compactness.default_qs(LoadedModel("smollm2-135m-instruct", None, None, PRESETS["smollm2-135m-instruct"]))
    assert len(qs) >= 8 and qs[0] == pytest.approx(1e-5) and qs[-1] == pytest.approx(3e-3)
    smoke = CompactnessConfig.for_scale("smollm2-135m-instruct", "smoke")
    assert smoke.n_calibration < full.n_calibration and smoke.data_chunk
    org = CompactnessConfig.for_scale("organism-aligned", "full")
    assert org.n_calibration == 400 and org.forward_only_arms == [] and org.n_eval_benign == 50
    assert "btap" not in org.light_arms and "random" in org.light_arms
    ref = lambda name: reference_model_for(LoadedModel(name, None, None, PRESETS[name]))[0]  # noqa: E731
    assert ref("smollm2-135m-instruct-safety") == "smollm2-135m-instruct"
    assert ref("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert ref("llama-3.1-8b-instruct") == "llama-3.1-8b"
    assert ref("mistral-7b-instruct-v0.3") == "mistral-7b-v0.3"   # its base counterpart, as for Llama
    assert ref("olmo-3-7b-instruct-dpo") == "olmo-3-7b"
    generic = LoadedModel("some-org/some-model", None, None, resolve_preset("some-org/some-model"))
    assert reference_model_for(generic)[0] == "some-org/some-model"   # no counterpart: itself


# -- the fine-tuning attack (finetune_attack.py) -------------------------------------------------------
def test_finetune_attack_fine_tunes_both_arms_on_compactness_own_mask(result):
    att = result["finetune_attack"]
    seeds = result["config"]["seeds"]
    assert sorted((r["arm"], r["seed"]) for r in att["runs"]) == sorted((a, s) for a in ("btap", "unpruned") for s in seeds)
    first = [r for r in result["runs"] if r["arm"] == "btap" and r["seed"] == seeds[0] and r["q"] == att["q"]]
    assert len(first) == 1 and first[0]["count"] == att["count"] > 0   # the sweep's own first-seed B-TAP mask
    assert [s["q"] for s in att["search"]] == sorted(s["q"] for s in att["search"])
    assert att["search"][-1]["q"] == att["q"] and len(att["movement"]) == len(seeds)
    assert set(att["summary"]) == set(finetune_attack.MEASURES)
    table = view.attack_table(result)
    assert len(table) == len(view.ATTACK_STATES) and list(table.columns)[1:] == list(view.ATTACK_MEASURES.values())
    assert "regains" in view.attack_markdown(result) or "no harm to compare" in view.attack_markdown(result)


def test_choose_mask_takes_the_smallest_q_that_cuts_enough_else_the_largest():
    masks = {q: Mask({"m": torch.arange(n)}, {"m": (3, 3)}, "test") for q, n in ((1e-3, 2), (1e-2, 5), (1e-1, 9))}
    cands = [(1e-1, masks[1e-1], 0.05), (1e-3, masks[1e-3], 0.9), (1e-2, masks[1e-2], 0.15)]
    q, mask, search, rule = finetune_attack.choose_mask(cands, baseline_harm=1.0)
    assert q == 1e-2 and mask is masks[1e-2] and [s["q"] for s in search] == [1e-3, 1e-2] and "none did" not in rule
    q, mask, search, rule = finetune_attack.choose_mask(cands[:2], baseline_harm=0.5)   # 0.05 -> cut 90%
    assert q == 1e-1
    q, _, search, rule = finetune_attack.choose_mask([(1e-3, masks[1e-3], 0.9)], baseline_harm=1.0)
    assert q == 1e-3 and "none did: the largest is used" in rule
    with pytest.raises(ValueError, match="at least one"):
        finetune_attack.choose_mask([], baseline_harm=1.0)
