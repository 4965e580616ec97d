"""The SmolLM2 safety counterpart's recipe (`safety_sft`): its cache key, the refusals it teaches,
chat tokenisation, and the refusal-SFT machinery on tiny random Llamas; the builder registry that
lets `models.load_model` build it without importing it."""
from __future__ import annotations

import pytest
import torch

from replication import models, safety_sft
from replication.batching import collate, response_loss
from replication.safety_sft import SafetyConfig
from tiny_models import tiny_llama, tiny_tokenizer


def test_safety_key_tracks_the_recipe():
    a, b = SafetyConfig(), SafetyConfig()
    assert a.key() == b.key() and a.key().startswith("safety-")
    assert SafetyConfig(steps=a.steps + 1).key() != a.key()
    assert SafetyConfig(train_layers=12).key() != a.key()


def test_refusal_for_is_stable_and_a_refusal():
    from replication.judges import is_keyword_refusal
    assert safety_sft.refusal_for("how to x") == safety_sft.refusal_for("how to x")
    assert len({safety_sft.refusal_for(f"prompt {i}") for i in range(50)}) > 1
    assert all(is_keyword_refusal(r) for r in safety_sft.REFUSALS)


def test_tokenize_chat_masks_the_prompt_and_ends_the_turn():
    tok = tiny_tokenizer()
    ids, labels = safety_sft.tokenize_chat(tok, "Write a poem about the sea?", "Waves crash on the shore.")
    prefix = tok.apply_chat_template([{"role": "user", "content": "Write a poem about the sea?"}], tokenize=False,
                                     add_generation_prompt=True)
    n_prompt = len(tok(prefix, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [-100] * n_prompt and -100 not in labels[n_prompt:]
    assert ids[-1] == tok.eos_token_id and labels[n_prompt:] == ids[n_prompt:]
    cut_ids, cut_labels = safety_sft.tokenize_chat(tok, "Write a poem about the sea?", "Waves crash on the shore.",
                                                max_response_tokens=2)
    assert len(cut_ids) == n_prompt + 2 and cut_ids[-1] != tok.eos_token_id  # cut off: no end of turn learned
    no_eos, _ = safety_sft.tokenize_chat(tok, "Write a poem about the sea?", "Waves.", eos=False)
    assert no_eos[-1] != tok.eos_token_id


def test_response_loss_matches_the_models_own_loss():
    tok, model = tiny_tokenizer(), tiny_llama(vocab_size=len(tiny_tokenizer()))
    batch = [safety_sft.tokenize_chat(tok, "What is the capital of France?", "Paris is the capital."),
             safety_sft.tokenize_chat(tok, "How do I make a bomb?", "I'm sorry.")]
    enc = collate(batch, tok.pad_token_id)
    with torch.no_grad():
        ours = response_loss(model, **enc)
        theirs = model(**enc).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_sft_trains_only_the_top_layers_and_learns(method):
    tok = tiny_tokenizer()
    model = tiny_llama(vocab_size=len(tok), layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SafetyConfig(method=method, train_layers=2, steps=25, batch_size=4, lr=3e-3,
                       warmup=2, benign_train_tokens=8)
    harmful = [("How do I make a bomb?", "I'm sorry."), ("How can I steal a car?", "I'm sorry.")]
    benign = [("Write a poem about the sea?", "Waves crash on the shore under a silver moon.", True),
              ("Give me a recipe for bread!", "Flour, water, salt and yeast; knead, then bake.", True)]
    trainable = safety_sft.make_trainable(model, cfg)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)
    losses = safety_sft.sft(trainable, tok, harmful, benign, cfg, progress=False)
    assert len(losses) == 25 and sum(losses[-5:]) < 0.5 * sum(losses[:5])
    if method == "lora":
        trainable = trainable.merge_and_unload()
    after = trainable.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.2." in k or ".layers.3." in k for k in changed)


def test_sft_rejects_unknown_method():
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        safety_sft.make_trainable(tiny_llama(), SafetyConfig(method="qlora"))


def test_safety_key_tracks_the_training_prompts(monkeypatch):
    from replication import benign_prompts
    key = SafetyConfig().key()
    edited = {**benign_prompts.BENIGN_INSTRUCTIONS}
    edited["cooking"] = edited["cooking"] + tuple(f"How do I make flatbread number {i}?" for i in range(20))
    monkeypatch.setattr(benign_prompts, "BENIGN_INSTRUCTIONS", edited)
    assert SafetyConfig().key() != key



def test_loading_the_counterpart_goes_through_its_registered_builder(monkeypatch, tmp_path):
    """`load_model` asks the registry for the folder and loads it; with nothing registered it says what to import."""
    assert models.BUILDERS[safety_sft.PRESET] is safety_sft.build_safety_counterpart
    seen = []

    def fake_load_folder(folder, *, device, dtype):
        seen.append(folder)
        return tiny_llama(vocab_size=len(tiny_tokenizer())), tiny_tokenizer()

    monkeypatch.setattr("replication.smollm2.load_folder", fake_load_folder)
    monkeypatch.setitem(models.BUILDERS, safety_sft.PRESET, lambda: tmp_path)
    loaded = models.load_model(safety_sft.PRESET)
    assert seen == [tmp_path] and loaded.extra == {"variant": "safety"} and loaded.preset.aligned

    monkeypatch.delitem(models.BUILDERS, safety_sft.PRESET)
    monkeypatch.delitem(models.IDENTITIES, safety_sft.PRESET)
    for call in (lambda: models.load_model(safety_sft.PRESET), lambda: models.cache_identity(safety_sft.PRESET)):
        with pytest.raises(models.MissingBuilderError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "import replication.safety_sft" in msg
        assert "replication.safety_sft.build_safety_counterpart()" in msg
