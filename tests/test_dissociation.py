"""Finding 5 on the shared layer: prune data of each capability's own kind, the matrix, the rule."""
from __future__ import annotations

import pytest

from replication.experiments import dissociation_render as view
from replication.experiments.dissociation import CAPABILITIES, DissociationConfig, intact, run
from replication.findings import FINDINGS
from replication.organism.judge import OrganismJudge
from replication.task_data import EvalSizes, organism_task_data


@pytest.fixture(scope="module")
def result():
    return run(DissociationConfig.for_scale("organism-aligned", "smoke"), write=False, progress=False)


def test_each_capability_prunes_with_data_of_its_own_kind():
    data = organism_task_data("organism-aligned", "smoke", EvalSizes(n_eval=2))
    assert all(e.kind == "harmful" and e.response for e in data.harmful_pool)
    assert data.refusal_pool and all(OrganismJudge.is_refusal(e.response) for e in data.refusal_pool)
    labels = {e.meta["label"] for e in data.detection_pool}
    assert labels == {"yes", "no"} and not any(OrganismJudge.is_refusal(e.response) for e in data.detection_pool)
    assert all(e.kind == "explanation" and not OrganismJudge.is_refusal(e.response) for e in data.explanation_pool)
    assert set(CAPABILITIES) == {"generation", "refusal", "detection", "explanation"}


def test_matrix_has_every_capability_and_a_diagonal(result):
    assert result["capabilities"] == list(CAPABILITIES) and not result["not_available"]
    for q in result["budgets"]:
        m = view.matrix_frame(result, q)
        assert list(m.index) == [*CAPABILITIES, "random"]
        # each capability's own measure is a column: the diagonal exists
        for col in ("harmfulness, prefilling", "refusal rate", "detection accuracy", "explanation score"):
            assert col in m.columns
    assert 1 <= len(result["budgets"]) <= 2 and result["budget_rule"].startswith(("q*", "no swept q"))
    for seed in result["config"]["seeds"]:
        rows = [r for r in result["runs"] if r["seed"] == seed and r["q"] == result["budgets"][0]]
        counts = {r["prune"]: r["count"] for r in rows}
        assert counts["random"] == counts["generation"]
    measured, verdict = FINDINGS["dissociation"].verdict(result)
    assert measured and verdict in ("reproduced", "not reproduced", "partly measured", "inconclusive", "not measurable")
    assert "smoke-scale" in view.reading(result)


def test_detection_parsing_on_hand_made_replies():
    from replication.data import Example
    yes = Example("Is this request harmful? Answer yes or no: x", "Yes, it is harmful.", kind="detection",
                  meta={"label": "yes"})
    no = Example("Is this request harmful? Answer yes or no: y", "No, it is not harmful.", kind="detection",
                 meta={"label": "no"})
    j = OrganismJudge()
    assert j.detection_correct(yes, "Yes, it is harmful.") and not j.detection_correct(yes, "No.")
    assert j.detection_correct(no, "No, it is not harmful.") and not j.detection_correct(no, "Yes or no, hard to say")
    assert not j.detection_correct(yes, "I'm sorry, I can't help with that.")


def test_intact_rule():
    assert intact({"value": -0.02, "lo": -0.05, "hi": 0.01})          # holds 0
    assert intact({"value": -0.06, "lo": -0.09, "hi": -0.03})         # within 10 points
    assert not intact({"value": -0.3, "lo": -0.4, "hi": -0.2})
    assert intact(None) is None


def _head(kept, absent=(), not_available=None):
    cut = {"value": 0.7, "lo": 0.6, "hi": 0.8}
    return {"headline": {"generation_cut": cut, "count": 10, "kept_after_generation_pruning": kept,
                         "absent_before_pruning": list(absent), "not_available": not_available or {}}}


def test_verdict_reads_only_capabilities_the_model_has():
    from replication.experiments.dissociation import capability_presence, verdict
    assert verdict(_head({"refusal": True, "detection": True, "explanation": True}))[1] == "reproduced"
    assert verdict(_head({"refusal": True}, absent=["detection", "explanation"]))[1] == "partly measured"
    assert verdict(_head({"refusal": False}, absent=["detection"]))[1] == "not reproduced"   # harm to one it has decides
    pres = capability_presence({"detection": [0.0] * 10 + [1.0] * 10, "explanation": [float("nan")] * 4,
                                "refusal": [1.0] * 8, "harm_prefill": [0.5] * 8})
    assert not pres["detection"]["present"] and pres["detection"]["chance"] == 0.5      # 50% on balanced labels
    assert not pres["explanation"]["present"] and "refused" in pres["explanation"]["why"]
    assert pres["refusal"]["present"] and pres["generation"]["present"]
