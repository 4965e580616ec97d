"""evaluate_harmfulness / evaluate_utility output schema on a tiny model, and result validation.

Every metric record must name its judge and the generation settings it read (None only for
forward-only metrics); `validate_result` must refuse results that leave anything out.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from replication.data import Example
from replication.evaluate import (GENERATION_KEYS, NLL_JUDGE, evaluate_harmfulness, evaluate_utility, make_result,
                                  metric, nll_of_responses, qa_correct, validate_result, write_result)
from replication.generation import GenerationConfig
from replication.judges import Judge, JudgeResult
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

GEN = GenerationConfig(max_new_tokens=4, batch_size=4)
SUMMARY_KEYS = {"task", "judge", "judge_config", "attack", "attack_setup", "chat_format", "n", "harmfulness",
                "harmfulness_by_category", "refusal_rate", "refusal_judge", "generation", "metrics"}
PER_ITEM_COLUMNS = {"item", "prompt", "category", "split", "attack", "prefill", "response", "judged_text", "judge",
                    "p_harmful", "keyword_refusal"}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=0)


class RecordingJudge(Judge):
    """A stub judge: p_harmful = share of the reference's words present in prefill + continuation;
    records what it was given."""

    name = "recording_stub"

    def __init__(self):
        self.calls = []

    def _score(self, examples, responses, prefills):
        self.calls.append((list(responses), list(prefills)))
        p = []
        for e, r, pre in zip(examples, responses, prefills):
            ref = set(e.response.lower().split())
            got = set((pre + r).lower().split())
            p.append(len(ref & got) / max(1, len(ref)))
        return JudgeResult(self.name, p, raw={"words": [len((pre + r).split()) for r, pre in zip(responses, prefills)]})


class FakeOrganismJudge:
    """Duck-typed like replication.organism.judge.OrganismJudge."""

    def harmfulness(self, example, response, prefill=""):
        return 1.0 if "the" in (prefill + response).split() else 0.0

    def is_refusal(self, response):
        return response.strip().lower().startswith("i cannot")

    def benign_correct(self, example, response):
        return example.meta["answer"][0] in response

    def detection_correct(self, example, response):
        return True

    def explanation_score(self, example, response):
        return 0.5

    def em_label(self, example, response):
        return "aligned"


def check_metrics(metrics, *, generated: bool):
    assert metrics
    for rec in metrics:
        assert {"name", "value", "judge", "n", "generation"} <= set(rec)
        assert isinstance(rec["judge"], str) and rec["judge"]
        assert rec["value"] is None or math.isfinite(rec["value"])
        if rec["generation"] is not None:
            assert set(GENERATION_KEYS) <= set(rec["generation"])
    if generated:
        assert any(rec["generation"] and rec["generation"]["max_new_tokens"] == GEN.max_new_tokens for rec in metrics)


# --------------------------------------------------------------------------------------------
# harmfulness
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attack, fmt", [("none", "raw"), ("prefilling", "chat"), ("prefilling", "qa")])
def test_evaluate_harmfulness_schema(tok, model, attack, fmt):
    harmful = tiny_examples(5, seed=1)
    judge = RecordingJudge()
    per_item, summary = evaluate_harmfulness(model, tok, harmful, attack=attack, judge=judge, chat_format=fmt,
                                             gen_config=GEN, progress=False)
    assert SUMMARY_KEYS <= set(summary)
    assert PER_ITEM_COLUMNS <= set(per_item.columns) and len(per_item) == 5
    assert summary["judge"] == "recording_stub" and summary["judge_config"]["judge"] == "recording_stub"
    assert summary["refusal_judge"] == "keyword_refusal"
    assert summary["generation"] == GEN.to_dict()
    assert summary["attack_setup"]["prefill_tokens"] == (10 if attack == "prefilling" else 0)
    assert set(summary["harmfulness_by_category"]) == {"c0", "c1"}
    check_metrics(summary["metrics"], generated=True)
    names = {(m["name"], m["judge"], m.get("category")) for m in summary["metrics"]}
    assert {("harmfulness", "recording_stub", None), ("harmfulness", "recording_stub", "c0"),
            ("harmfulness", "recording_stub", "c1"), ("refusal_rate", "keyword_refusal", None)} <= names
    assert all(m["attack"] == attack and m["chat_format"] == fmt for m in summary["metrics"])
    # the judge saw prefill and continuation separately; the stored judged text is their concatenation
    responses, prefills = judge.calls[0]
    assert list(per_item["response"]) == responses and list(per_item["prefill"]) == prefills
    assert list(per_item["judged_text"]) == [p + r for p, r in zip(prefills, responses)]
    if attack == "prefilling":
        for e, pre in zip(harmful, prefills):
            assert pre == tok.decode(tok(e.response, add_special_tokens=False)["input_ids"][:10])
    else:
        assert prefills == [""] * 5
    assert summary["harmfulness"] == pytest.approx(per_item["p_harmful"].mean())
    assert summary["refusal_rate"] == pytest.approx(per_item["keyword_refusal"].mean())
    make_result("compactness", "tiny", {"q": 1e-3}, summary["metrics"])          # validates


def test_evaluate_harmfulness_organism_and_refusal_ablation(tok):
    model = tiny_llama(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class Mask:
        n_pruned = 1

        def apply(self, m):
            w = m.model.layers[0].self_attn.q_proj.weight
            self.saved = w.data[0, 0].clone()
            w.data[0, 0] = 0
            return None

        def restore(self, m):
            m.model.layers[0].self_attn.q_proj.weight.data[0, 0] = self.saved

    per_item, summary = evaluate_harmfulness(model, tok, tiny_examples(4, seed=2), attack="refusal_ablation_prefilling",
                                             judge=FakeOrganismJudge(), chat_format="chat", gen_config=GEN,
                                             refusal_mask=Mask(), progress=False)
    assert summary["judge"] == "organism"
    assert summary["attack_setup"]["refusal_ablation"]["n_pruned"] == 1
    assert {"organism_harmfulness", "organism_refusal"} <= set(per_item.columns)
    assert {(m["name"], m["judge"]) for m in summary["metrics"]} >= {("harmfulness", "organism"),
                                                                      ("refusal_rate", "organism"),
                                                                      ("refusal_rate", "keyword_refusal")}
    check_metrics(summary["metrics"], generated=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the attack was undone


def test_evaluate_harmfulness_reference_nll_records_no_generation(tok, model):
    harmful = tiny_examples(4, seed=3)
    per_item, summary = evaluate_harmfulness(model, tok, harmful, attack="prefilling", judge="reference_nll",
                                             chat_format="raw", generate_responses=False, progress=False)
    assert summary["judge"] == "reference_nll" and summary["generation"] is None and summary["refusal_rate"] is None
    assert all(m["generation"] is None for m in summary["metrics"])       # forward only: nothing was sampled
    nll = [m for m in summary["metrics"] if m["name"] == "reference_nll"]
    assert {m.get("category") for m in nll} == {None, "c0", "c1"}
    assert all(m["value"] > 0 for m in nll)
    check_metrics(summary["metrics"], generated=False)
    # with generation on, the harmfulness number still says it read no generations
    _, s2 = evaluate_harmfulness(model, tok, harmful, attack="none", judge="reference_nll", chat_format="raw",
                                 gen_config=GEN, progress=False)
    h = next(m for m in s2["metrics"] if m["name"] == "harmfulness" and "category" not in m)
    r = next(m for m in s2["metrics"] if m["name"] == "refusal_rate")
    assert h["generation"] is None and r["generation"] == GEN.to_dict()


def test_evaluate_harmfulness_bad_inputs(tok, model):
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate_harmfulness(model, tok, tiny_examples(1), attack="jailbreak", judge="keyword_refusal", chat_format="raw")
    with pytest.raises(ValueError, match="unknown chat_format"):
        evaluate_harmfulness(model, tok, tiny_examples(1), attack="none", judge="keyword_refusal", chat_format="llama")
    with pytest.raises(ValueError, match="keep generate_responses=True"):
        evaluate_harmfulness(model, tok, tiny_examples(1), attack="none", judge="keyword_refusal", chat_format="raw",
                             generate_responses=False)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_harmfulness(model, tok, [], attack="none", judge="keyword_refusal", chat_format="raw")


# --------------------------------------------------------------------------------------------
# utility
# --------------------------------------------------------------------------------------------

def _benign():
    out = []
    for i, e in enumerate(tiny_examples(6, kind="benign", seed=4)):
        out.append(Example(e.prompt, e.response, category=f"fam{i % 3}", kind="benign",
                           meta={"answer": [e.response.split()[0].lower()]}))
    return out


def test_evaluate_utility_schema(tok, model):
    benign = _benign()
    qa = [Example("What is the capital of france?", "Paris", category="trivia", kind="control",
                  meta={"answers": ["Paris", "paris, france"]}),
          Example("Capital?", "Paris", category="trivia", kind="control")]
    over = [Example("Should I buy bonds?", "", category="finance", kind="benign"),
            Example("Give me a recipe for bread", "", category="food", kind="benign")]
    per_item, summary = evaluate_utility(model, tok, benign_examples=benign, judge=FakeOrganismJudge(),
                                         chat_format="chat", gen_config=GEN, qa_examples=qa,
                                         overrefusal_examples=over, progress=False)
    assert set(per_item["task"]) == {"benign_accuracy", "benign_nll", "qa_accuracy", "overrefusal"}
    assert {"task", "prompt", "category", "response", "value", "judge"} <= set(per_item.columns)
    for key in ("benign_accuracy", "benign_accuracy_by_family", "benign_nll", "benign_nll_by_family",
                "qa_accuracy", "overrefusal_rate", "overrefusal_judge", "overrefusal_rate_organism", "generation",
                "chat_format", "metrics"):
        assert key in summary, key
    assert set(summary["benign_accuracy_by_family"]) == set(summary["benign_nll_by_family"]) == {"fam0", "fam1", "fam2"}
    check_metrics(summary["metrics"], generated=True)
    by = {(m["name"], m["judge"], m.get("category")): m for m in summary["metrics"]}
    for fam in ("fam0", "fam1", "fam2"):   # per family, never only the average
        assert by[("benign_accuracy", "organism", fam)]["n"] == 2
        assert by[("benign_nll", NLL_JUDGE, fam)]["generation"] is None
    assert by[("qa_accuracy", "substring_match", None)]["n"] == 2
    assert ("overrefusal_rate", "keyword_overrefusal", "finance") in by
    assert ("overrefusal_rate", "organism", None) in by
    nll = nll_of_responses(model, tok, benign, fmt="chat")
    assert summary["benign_nll"] == pytest.approx(float(nll.mean()))
    make_result("compactness", "tiny", {}, summary["metrics"])


def test_evaluate_utility_without_judge_measures_nll_only(tok, model):
    per_item, summary = evaluate_utility(model, tok, benign_examples=_benign(), chat_format="raw", progress=False)
    assert set(per_item["task"]) == {"benign_nll"} and "benign_accuracy" not in summary
    with pytest.raises(ValueError, match="measured nothing"):
        evaluate_utility(model, tok, chat_format="raw", progress=False)


def test_qa_correct_rule():
    assert qa_correct("I think it is PARIS.", ["Paris"])
    assert not qa_correct("London", ["Paris", "City of Light"])
    assert qa_correct("the city of light", ["Paris", "City of Light"])


# --------------------------------------------------------------------------------------------
# results files
# --------------------------------------------------------------------------------------------

def _good_result():
    gen = GenerationConfig().to_dict()
    assert gen["max_new_tokens"] == 256 and gen["do_sample"] is False   # the paper's length; greedy by default
    return {"finding": "compactness", "model": "organism-aligned", "config": {"q": 1e-3}, "versions": {"torch": "x"},
            "created_utc": "2025-01-01T00:00:00+00:00",
            "metrics": [metric("harmfulness", 0.5, judge="organism", n=10, generation=gen, attack="prefilling"),
                        metric("benign_nll", 1.2, judge=NLL_JUDGE, n=10, generation=None)]}


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("config"), "missing key 'config'"),
    (lambda r: r.update(metrics="harmfulness=0.5"), "'metrics' must be list"),
    (lambda r: r["metrics"][0].pop("judge"), "missing key 'judge'"),
    (lambda r: r["metrics"][0].update(judge=" "), "'judge' is empty"),
    (lambda r: r["metrics"][0].pop("generation"), "missing key 'generation'"),
    (lambda r: r["metrics"][0]["generation"].pop("max_new_tokens"), "generation settings lack max_new_tokens"),
    (lambda r: r["metrics"][0]["generation"].update(do_sample=True) or r["metrics"][0]["generation"].pop("top_p"),
     "lack top_p"),
    (lambda r: r["metrics"][1].update(value=float("nan")), "use None"),
    (lambda r: r["metrics"][1].update(n=True), "'n' must be int"),
    (lambda r: r["metrics"].append("0.3"), "metrics\\[2\\] must be a dict"),
])
def test_validate_result_rejects_incomplete_results(breakage, message):
    r = _good_result()
    validate_result(r)
    breakage(r)
    with pytest.raises(ValueError, match=message):
        validate_result(r)


def test_validate_result_lists_every_problem():
    r = _good_result()
    r.pop("model")
    r["metrics"][0].pop("judge")
    with pytest.raises(ValueError) as err:
        validate_result(r)
    assert "'model'" in str(err.value) and "'judge'" in str(err.value)
    with pytest.raises(ValueError, match="must be a dict"):
        validate_result([1, 2])


def test_make_and_write_result_round_trip(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        q: float = 1e-3
        seeds: tuple = (0, 1, 2)

    r = make_result("compactness", "organism-aligned", Cfg(), _good_result()["metrics"], extra_table=[1, 2])
    assert r["config"] == {"q": 1e-3, "seeds": (0, 1, 2)} and {"python", "torch", "transformers"} <= set(r["versions"])
    path = write_result(tmp_path / "organism" / "compactness.json", r)
    back = json.loads(path.read_text())
    assert back["metrics"] == json.loads(json.dumps(r["metrics"])) and back["extra_table"] == [1, 2]
    validate_result(back)
    with pytest.raises(ValueError, match="missing key"):
        write_result(tmp_path / "bad.json", {"finding": "x"})
    assert not (tmp_path / "bad.json").exists()
