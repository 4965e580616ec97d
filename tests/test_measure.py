"""The shared prune-and-measure layer: intervals, the score cache, the evaluator, the results writer."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

from replication import score_cache, stats
from replication.data import Example
from replication.judges import qa_correct
from replication.measure import EvalConfig, Evaluator, State, nll_of_responses
from replication.models import LoadedModel, Preset
from replication.pruning import Mask, jaccard
from replication.results import read_result, write_result
from replication.scoring import compute_scores
from replication.task_data import EvalSizes, MissingTaskData, TaskData, extended_test_set, organism_task_data


# -- statistics -------------------------------------------------------------------------------------
def test_bootstrap_intervals_cover_the_point_and_shrink_with_more_prompts():
    rng = np.random.default_rng(0)
    small = (rng.random(20) < 0.7).astype(float)
    large = (rng.random(400) < 0.7).astype(float)
    a, b = stats.mean_interval(small), stats.mean_interval(large)
    assert a.lo <= a.value <= a.hi and b.lo <= b.value <= b.hi
    assert (b.hi - b.lo) < (a.hi - a.lo) and a.n_prompts == 20 and a.n_seeds == 1
    assert stats.mean_interval(small) == a            # fixed resampling seed: reproducible


def test_paired_difference_is_narrow_when_few_answers_change():
    base = np.r_[np.ones(90), np.zeros(10)]
    pruned = base.copy()
    pruned[:2] = 0                                     # two answers lost, the rest identical
    d = stats.difference(base, pruned)
    assert d.value == pytest.approx(0.02) and 0.0 <= d.lo and d.hi <= 0.05 + 1e-9
    marginal = stats.mean_interval(base)
    assert (d.hi - d.lo) < (marginal.hi - marginal.lo)


def test_relative_drop_over_seeds_and_prompts():
    base = np.ones(50)
    pruned = np.vstack([np.r_[np.zeros(45), np.ones(5)]] * 3)   # 3 seeds, 90% cut each
    cut = stats.relative_drop(base, pruned)
    assert cut.value == pytest.approx(0.9) and cut.n_seeds == 3 and cut.lo < 0.9 < cut.hi
    with pytest.raises(ValueError, match="same prompts"):
        stats.relative_drop(np.ones(5), np.ones(6))


# -- score cache ------------------------------------------------------------------------------------
def test_score_cache_hits_match_and_miss_on_other_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMPRUNE_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    exs = tiny_examples(4)
    fresh = compute_scores(model, tok, exs, score="signed", role="prune", batch_size=2, progress=False)
    first = score_cache.cached_scores(model, tok, exs, score="signed", role="prune", batch_size=2)
    files = list((tmp_path / "scores").glob("*.safetensors"))
    assert len(files) == 1
    second = score_cache.cached_scores(model, tok, exs, score="signed", role="prune", batch_size=2)
    for k in fresh:
        assert torch.equal(fresh[k], first[k]) and torch.equal(first[k], second[k])
    assert second.fingerprint == fresh.fingerprint and second.meta == fresh.meta
    assert all(torch.equal(second.probe[k], fresh.probe[k]) for k in fresh.probe)
    # a pruned copy (changed decoder weights) keeps scoring.model_fingerprint but is a different cache entry
    with torch.no_grad():
        next(iter(m for n, m in model.named_parameters() if "mlp" in n)).view(-1)[0] = 0.0
    score_cache.cached_scores(model, tok, exs, score="signed", role="prune", batch_size=2)
    assert len(list((tmp_path / "scores").glob("*.safetensors"))) == 2
    # other examples, other settings: other entries
    score_cache.cached_scores(model, tok, exs[:3], score="signed", role="prune", batch_size=2)
    score_cache.cached_scores(model, tok, exs[:3], score="abs", role="preserve", batch_size=2)
    assert len(list((tmp_path / "scores").glob("*.safetensors"))) == 4
    assert not list((tmp_path / "scores").glob(".*tmp"))    # atomic: no temporary files left


# -- task data --------------------------------------------------------------------------------------
def test_task_data_names_what_is_missing():
    tok = tiny_tokenizer()
    data = TaskData(model="m", kind="real", categories=("a",), families=("f",), harmful_pool=[], benign_pool=[],
                    control_pool=[], refusal_pool=[], test_harmful=[], test_benign=[], harm_judge=None,
                    info={"missing": {"test_detection": "no offline detection prompts"}})
    with pytest.raises(MissingTaskData, match="no test detection: no offline detection prompts"):
        data.require("test_detection")
    with pytest.raises(MissingTaskData, match="no harmful pool"):
        data.harmful()
    with pytest.raises(MissingTaskData, match="empty calibration pool"):
        TaskData.sample([], 3, 0)
    assert tok is not None


def test_organism_task_data_splits_are_disjoint_and_sized():
    data = organism_task_data("organism-aligned", "smoke", EvalSizes(n_eval=30, n_eval_benign=25, n_explanation=3))
    train = {e.prompt for e in data.harmful_pool}
    assert not train & {e.prompt for e in data.test_harmful}
    per_cat = {c: sum(e.category == c for e in data.test_harmful) for c in data.categories}
    assert set(per_cat.values()) == {30}          # beyond the 20-prompt smoke test pool: extended
    assert len({e.prompt for e in data.test_harmful}) == len(data.test_harmful)
    assert all(e.split == "test" for e in data.test_harmful + data.test_benign)
    per_fam = {f: sum(e.category == f for e in data.test_benign) for f in data.families}
    short = data.info["test_short_of_target"]          # a small family's test split can run out: recorded
    assert all(per_fam[f] == (short.get(f"benign/{f}", 25)) for f in data.families)
    assert {e.category for e in data.harmful(["weapons"], test=True)} == {"weapons"}
    assert "weapons" not in {e.category for e in data.harmful(exclude=["weapons"])}
    with pytest.raises(MissingTaskData, match="no harm categories"):
        data.harmful(["nonsense"])
    assert data.em() is data.world
    # the extension is deterministic
    assert [e.prompt for e in extended_test_set(data.world, "harmful", "weapons", 30)] == \
           [e.prompt for e in data.test_harmful if e.category == "weapons"]


# -- evaluator --------------------------------------------------------------------------------------
def _tiny_real():
    from replication.judges import get_judge
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=1)
    loaded = LoadedModel("tiny", model, tok, Preset("tiny", "hub", score_batch_size=4, gen_batch_size=4))
    harmful = tiny_examples(6, kind="harmful", min_words=14, max_words=20)
    for i, e in enumerate(harmful):
        e.category = f"c{i % 2}"
    benign = tiny_examples(4, kind="benign", seed=2, min_words=4)
    for i, e in enumerate(benign):
        e.category = f"f{i % 2}"
    data = TaskData(model="tiny", kind="real", categories=("c0", "c1"), families=("f0", "f1"), harmful_pool=[],
                    benign_pool=[], control_pool=[], refusal_pool=[], test_harmful=harmful, test_benign=benign,
                    harm_judge=get_judge("reference_nll", model=model, tokenizer=tok, chat_format="chat", batch_size=4))
    return loaded, data


def test_evaluator_real_model_metrics_items_and_judges():
    loaded, data = _tiny_real()
    ev = Evaluator(loaded, data, EvalConfig(max_new_tokens=4, n_generate=2))
    st = ev.evaluate(["harm_prefill", "utility", "refusal"])
    assert len(st.items["harm_prefill"]) == 6 and len(st.items["refusal_prefill"]) == 2
    assert set(st.by_category("harm_prefill")) == {"c0", "c1"}
    assert {"utility:f0", "utility:f1", "nll:f0", "utility:no_over_refusal"} <= set(st.values)
    assert st.values["harm_prefill"] == pytest.approx(np.mean(st.items["harm_prefill"]))
    info = ev.metric_info(st)
    assert info["harm_prefill"]["judge"] == "reference_nll" and info["harm_prefill"]["generation"] is None
    assert info["refusal_prefill"]["judge"] == "keyword_refusal" and info["refusal_prefill"]["generation"]
    fo = ev.evaluate(["harm_prefill", "utility"], forward_only=True)
    assert "refusal_prefill" not in fo.values and "utility:no_over_refusal" not in fo.values
    assert fo.values["harm_prefill"] == pytest.approx(st.values["harm_prefill"])
    assert set(ev.forward_only_view(st).values) - {"refusal"} == set(fo.values)
    with pytest.raises(MissingTaskData):
        ev.evaluate(["detection"])
    with pytest.raises(ValueError, match="unknown measures"):
        ev.evaluate(["harmfulness"])
    with pytest.raises(ValueError, match="refusal_mask"):
        ev.evaluate(["harm_ra_prefill"])
    # states round-trip through JSON (NaN items become null)
    back = State.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back.values == st.values and back.items.keys() == st.items.keys()


def test_evaluator_measures_a_pruned_state_when_the_mask_is_applied():
    from replication.pruning import applied
    loaded, data = _tiny_real()
    ev = Evaluator(loaded, data, EvalConfig(max_new_tokens=2))
    before = ev.evaluate(["harm_prefill"], forward_only=True).values["harm_prefill"]
    shapes = {n: tuple(m.weight.shape) for n, m in
              __import__("replication.scoring", fromlist=["x"]).decoder_linears(loaded.model).items()}
    full = Mask({n: torch.arange(int(np.prod(s))) for n, s in shapes.items()}, shapes, None, {"method": "all"})
    with applied(loaded.model, full):
        after = ev.evaluate(["harm_prefill"], forward_only=True).values["harm_prefill"]
    assert after != before
    assert ev.evaluate(["harm_prefill"], forward_only=True).values["harm_prefill"] == pytest.approx(before)


def test_nll_of_responses_and_qa_rule():
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    exs = tiny_examples(3, kind="benign")
    nll = nll_of_responses(model, tok, exs, fmt="raw")
    assert nll.shape == (3,) and np.all(np.isfinite(nll)) and np.all(nll > 0)
    assert math.isnan(nll_of_responses(model, tok, [Example("q", "", kind="benign")], fmt="raw")[0])
    assert qa_correct("I think it is PARIS.", ["Paris"]) and not qa_correct("London", ["Paris", "City of Light"])


def test_jaccard_of_masks():
    a = Mask({"w": torch.tensor([0, 1, 2, 3])}, {"w": (2, 4)}, None)
    b = Mask({"w": torch.tensor([2, 3, 4, 5])}, {"w": (2, 4)}, None)
    assert jaccard(a, b) == pytest.approx(2 / 6) and jaccard(a, a) == 1.0
    assert jaccard(Mask({"w": torch.tensor([], dtype=torch.long)}, {"w": (2, 4)}, None),
                   Mask({"w": torch.tensor([], dtype=torch.long)}, {"w": (2, 4)}, None)) == 0.0


# -- results writer ---------------------------------------------------------------------------------
def test_results_are_written_with_their_masks(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path))
    mask = Mask({"w": torch.tensor([1, 5])}, {"w": (2, 4)}, "fp", {"method": "btap"})
    res = write_result({"finding": "f", "model": "org/m", "scale": "smoke", "config": {"q": 1}, "judges": {},
                        "headline": {}}, masks={"headline": mask})
    assert set(res) >= {"versions", "created_utc", "masks"}
    back = read_result("org/m", "f")
    assert back["masks"]["headline"]["sha256"] == mask.digest()
    loaded = Mask.load(tmp_path / "org--m" / back["masks"]["headline"]["path"])
    assert loaded.equals(mask) and loaded.fingerprint == "fp"
    with pytest.raises(ValueError, match="needs"):
        write_result({"finding": "f", "model": "m"})
    with pytest.raises(FileNotFoundError, match="python -m replication run g"):
        read_result("org/m", "g")
