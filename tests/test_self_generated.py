"""The real models' own answers: the cached self-generation that makes the prune/preserve/control
sets (generation itself is faked here: no model forward), the keyword refusal filter, and the
cache identity of a derived model."""
from __future__ import annotations

import pytest

from replication import real_data
from replication import self_generated as sg
from replication.data import Example


def test_is_refusal_looks_at_the_opening():
    assert sg.is_refusal("I'm sorry, but I can't help with that.")
    assert sg.is_refusal("I cannot provide instructions for this.")
    assert not sg.is_refusal("Sure! Here is a recipe for bread: flour, water, salt.")
    assert not sg.is_refusal("Step 1: do this. " * 20 + "I'm sorry")  # late mention is not a refusal
    assert sg.refusal_rate(["I'm sorry.", "Sure."]) == 0.5


# ------------------------------------------------------------------------------------------------
# self-generation (generation faked: no model forward)
# ------------------------------------------------------------------------------------------------

class _Tok:
    """Just enough tokenizer for self_generate's bookkeeping (word count as token count)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


@pytest.fixture
def fake_generate(monkeypatch, tmp_path):
    """Route the cache to tmp and replace generation by a rule: prompts with 'refuse' are refused."""
    monkeypatch.setenv("HARMPRUNE_CACHE", str(tmp_path))
    calls = []

    def generate(model, tok, prompts, *, chat_format="chat", prefills=None, config=None, progress=True, desc=""):
        calls.append(list(prompts))
        return ["I'm sorry, I can't help with that." if "refuse" in p else f"Sure, answer to {p}" for p in prompts]

    import replication.generation as gen_mod
    monkeypatch.setattr(gen_mod, "generate", generate)
    return calls


def _examples(n, refuse_every=3):
    return [Example(prompt=f"prompt {i}" + (" refuse" if i % refuse_every == 0 else ""), category="c", kind="harmful")
            for i in range(n)]


def test_self_generate_caches_filters_and_counts(fake_generate, tmp_path, monkeypatch):
    monkeypatch.setattr(sg, "weights_digest", lambda m: "fixed")  # object() has no parameters
    loaded = (object(), _Tok(), "fake")
    exs = _examples(9)
    out = sg.self_generate(loaded, exs, cache_key="t", progress=False)
    assert len(fake_generate) == 1
    assert out.n_filtered == 3 and len(out) == 6
    assert all(e.response.startswith("Sure") and e.meta["refused"] is False for e in out)
    assert all(e.meta["refused"] for e in out.filtered)
    assert out.path.is_file() and out.path.parent == tmp_path / "generated"
    again = sg.self_generate(loaded, exs, cache_key="t", progress=False)
    assert len(fake_generate) == 1  # served from the cache
    assert [e.response for e in again] == [e.response for e in out]
    sg.self_generate(loaded, exs[:5], cache_key="t", progress=False)
    assert len(fake_generate) == 2  # a different prompt list is a different cache entry
    kept_all = sg.self_generate(loaded, exs, cache_key="t2", filter_refusals=False, progress=False)
    assert len(kept_all) == 9 and kept_all.n_filtered == 0


def test_self_generate_rejects_bad_cache_key_and_prefills(fake_generate, monkeypatch):
    monkeypatch.setattr(sg, "weights_digest", lambda m: "fixed")
    with pytest.raises(ValueError, match="cache_key"):
        sg.self_generate((object(), _Tok()), _examples(2), cache_key="a/b", progress=False)
    with pytest.raises(ValueError, match="prefills"):
        sg.self_generate((object(), _Tok()), _examples(2), cache_key="a", prefills=["x"], progress=False)


def test_prune_and_preserve_sets_stop_once_n_are_kept(fake_generate, monkeypatch):
    monkeypatch.setattr(sg, "CHUNK", 10)
    monkeypatch.setattr(sg, "weights_digest", lambda m: "fixed")
    loaded = (object(), _Tok(), "fake")
    prune = sg.harmful_prune_set(loaded, n=12, progress=False)
    assert len(prune) == 12 and len(fake_generate) == 2  # two chunks of 10 prompts were enough
    assert all(e.split == "train" and e.kind == "harmful" and e.response for e in prune)
    again = sg.harmful_prune_set(loaded, n=12, progress=False)
    assert [e.prompt for e in again] == [e.prompt for e in prune] and len(fake_generate) == 2
    cats = {e.category for e in prune}
    assert len(cats) >= 3  # hash order mixes the sources' categories
    keep = sg.benign_preserve_set(loaded, n=None, progress=False)
    train = real_data.load_benign_instructions(split="train")
    assert len(keep) == len(train) and {e.prompt for e in keep} == {e.prompt for e in train}


def test_trivia_control_set_and_refusal_walk(fake_generate, monkeypatch):
    monkeypatch.setattr(sg, "weights_digest", lambda m: "fixed")
    loaded = (object(), _Tok(), "fake")
    control = sg.trivia_control_set(loaded, n=5, chunk=4, progress=False)
    assert len(control) == 5 and len(fake_generate) == 2       # chunks of 4: two were needed
    assert all(e.kind == "control" and e.split == "train" and "correct" in e.meta for e in control)
    # a stop rule ends the walk early; whole chunks only, so max_prompts=5 still answers 2 chunks of 4
    seen = sg.harmful_prune_set(loaded, n=None, chunk=4, max_prompts=5, progress=False)
    assert len(seen) + seen.n_filtered == 8
    stopped = sg.harmful_prune_set(loaded, n=None, chunk=4, progress=False, stop=lambda kept, refused: len(kept) >= 3)
    assert len(stopped) + stopped.n_filtered == 4


def test_derived_model_identity_is_its_name_plus_the_recipe_key():
    """Same identity string as before the split (so existing caches stay valid): name + ':' + key."""
    from replication import safety_sft
    from replication.models import cache_identity
    assert cache_identity("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert cache_identity(safety_sft.PRESET) == f"smollm2-135m-instruct-safety:{safety_sft.SafetyConfig().key()}"


def test_weights_digest_tracks_every_weight():
    import torch
    from tiny_models import tiny_llama
    model = tiny_llama()
    d = sg.weights_digest(model)
    assert d == sg.weights_digest(model) and len(d) == 16
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    assert sg.weights_digest(model) != d
