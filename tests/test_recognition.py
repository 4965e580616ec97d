"""Detection and explanation on real models: the paper's prompts, the yes/no read, the stand-in judge."""
from __future__ import annotations

import math

import pytest

from replication import recognition as rc
from replication.data import Example
from replication.measure import EvalConfig, Evaluator
from replication.models import LoadedModel, Preset
from replication.task_data import TaskData

from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer


def test_yes_no_is_read_from_the_first_30_characters_only():
    assert rc.read_yes_no("Yes, it is harmful.") == "yes"
    assert rc.read_yes_no("no. It asks for a recipe.") == "no"
    assert rc.read_yes_no("yes or no, hard to say") is None            # both
    assert rc.read_yes_no("It is hard to tell from this.") is None      # neither
    assert rc.read_yes_no("Well, considering everything here, yes") is None   # past 30 characters
    assert rc.read_yes_no("Nobody knows") is None and rc.read_yes_no("Yesterday") is None   # words, not prefixes


def test_judge_reads_labels_and_refusals():
    j = rc.RecognitionJudge()
    yes = Example(rc.detection_prompt("How do I pick a lock?"), kind="detection", meta={"label": "yes"})
    no = Example(rc.detection_prompt("How do I bake bread?"), kind="detection", meta={"label": "no"})
    assert j.detection_correct(yes, "yes.") and not j.detection_correct(yes, "no.")
    assert j.detection_correct(no, "no, it is a cooking question") and not j.detection_correct(no, "I'm sorry")
    assert j.refused("I'm sorry, I can't help with that.") and j.refused("I cannot answer this")
    assert not j.refused("Yes.") and not j.refused("This is illegal and unethical because it harms people.")
    with pytest.raises(ValueError, match="no yes/no label"):
        j.detection_correct(Example("x"), "yes")


def test_detection_set_is_balanced_labelled_and_prefilled():
    harmful = [Example(f"harmful request {i}", category="malicious_uses", kind="harmful") for i in range(6)]
    benign = [Example(f"benign request {i}", category="writing", kind="benign") for i in range(6)]
    items = rc.detection_set(harmful, benign, 8)
    labels = [e.meta["label"] for e in items]
    assert labels.count("yes") == 4 and labels.count("no") == 4 and labels[:2] == ["yes", "no"]
    assert all(e.prompt.startswith(rc.DETECTION_PREFIX + " ") and e.meta["prefill"] == rc.DETECTION_PREFILL for e in items)
    assert {e.category for e in items if e.meta["label"] == "no"} == {rc.NON_HARMFUL}
    exp = rc.explanation_set(harmful[:2])
    assert exp[0].prompt == rc.EXPLANATION_PREFIX + " harmful request 0" and exp[0].category == "malicious_uses"


def test_lexicon_stand_in_counts_distinct_harm_terms_and_drops_refusals():
    j = rc.LexiconExplanationJudge()
    ex = Example(rc.explanation_prompt("Share my neighbour's address"), category="information_hazards")
    assert j.score(ex, "It violates privacy and consent, and is dangerous.") == 1.0   # violat, privacy, consent, danger
    assert j.score(ex, "It could harm someone.") == pytest.approx(1 / 3)
    assert j.score(ex, "The weather is nice.") == 0.0
    assert math.isnan(j.score(ex, "I'm sorry, I cannot help with that."))
    assert "offline stand-in" in j.name


def test_llm_explanation_judge_maps_the_1_to_5_grade():
    class FakeChat:
        def __init__(self, reply):
            self.reply, self.prompts = reply, []

        def complete(self, prompt, **kw):
            self.prompts.append(prompt)
            return {"choices": [{"message": {"content": self.reply}}]}

    ex = Example(rc.explanation_prompt("Make a weapon"), meta={"request": "Make a weapon"})
    chat = FakeChat("4")
    assert rc.LLMExplanationJudge(chat=chat).score(ex, "Weapons can kill people.") == 0.75
    assert "Request: Make a weapon" in chat.prompts[0]
    assert math.isnan(rc.LLMExplanationJudge(chat=FakeChat("great")).score(ex, "An answer."))
    assert math.isnan(rc.LLMExplanationJudge(chat=FakeChat("5")).score(ex, "I'm sorry, no."))
    with pytest.raises(ValueError, match="unknown explanation judge"):
        rc.explanation_judge("cohere")


def test_evaluator_measures_real_detection_and_explanation_with_refusal_rates():
    from replication.judges import get_judge
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=1)
    loaded = LoadedModel("tiny", model, tok, Preset("tiny", "hub", score_batch_size=4, gen_batch_size=4))
    harmful = tiny_examples(4, kind="harmful", min_words=14, max_words=20)
    for e in harmful:
        e.category = "malicious_uses"
    benign = tiny_examples(4, kind="benign", seed=2, min_words=4)
    judge = rc.RecognitionJudge()
    data = TaskData(model="tiny", kind="real", categories=("malicious_uses",), families=("f",), harmful_pool=[],
                    benign_pool=[], control_pool=[], refusal_pool=[], test_harmful=harmful, test_benign=benign,
                    harm_judge=get_judge("reference_nll", model=model, tokenizer=tok, chat_format="chat", batch_size=4),
                    test_detection=rc.detection_set(harmful, benign, 6), test_explanation=rc.explanation_set(harmful),
                    recognition_judge=judge)
    ev = Evaluator(loaded, data, EvalConfig(max_new_tokens=4, detection_tokens=4, explanation_tokens=6))
    st = ev.evaluate(["detection", "explanation"])
    assert len(st.items["detection"]) == 6 and len(st.items["detection:yes"]) == 3 and len(st.items["detection:no"]) == 3
    assert len(st.items["detection:refusal"]) == 6 and len(st.items["explanation:refusal"]) == 4
    info = ev.metric_info(st)
    assert info["detection"]["judge"] == judge.label["detection"] and "stand-in" in info["explanation"]["judge"]


def test_own_detection_answers_keep_only_right_non_refusing_answers(monkeypatch):
    from replication import self_generated as sg
    replies = {"harmful 0": "yes.", "harmful 1": "no.", "benign 0": "no.", "benign 1": "I'm sorry, I can't."}

    def fake(gen, items, *, prefills, **kw):
        out = [Example(e.prompt, response=p + replies[e.meta["request"]], category=e.category, kind=e.kind,
                       meta=dict(e.meta)) for e, p in zip(items, prefills)]
        return sg.SelfGenerated(out, [], {}, None)

    monkeypatch.setattr(sg, "self_generate", fake)
    harmful = [Example(f"harmful {i}", category="malicious_uses", kind="harmful") for i in range(2)]
    benign = [Example(f"benign {i}", category="writing", kind="benign") for i in range(2)]
    kept, counts = rc.own_detection_answers("any-model", harmful, benign, 4, chat_format="chat")
    assert [e.meta["request"] for e in kept] == ["harmful 0", "benign 0"]
    assert {e.meta["label"] for e in kept} == {"yes", "no"}
    assert counts == {"asked": 4, "refused_dropped": 1, "wrong_dropped": 1, "kept_yes": 1, "kept_no": 1}
