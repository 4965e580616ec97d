"""Scores against a direct reference: per example, per layer, like the authors' loop.

The reference tokenises from the rule in the issue (not through `tokenize_example`), runs one
example at a time with only one layer's Linear weights trainable, takes Hugging Face's own
`labels=` loss, and sums `.grad` (or `.grad.abs()`) over examples.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from replication.data import Example
from replication.scoring import (
    Scores,
    compute_scores,
    decoder_linears,
    find_decoder_layers,
    model_fingerprint,
    relative_error,
    tokenize_example,
)
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

TOL = 1e-5


def reference_encode(tok, ex: Example, role: str, fmt: str, skip: int) -> tuple[list[int], list[int]]:
    """The issue's rule, written out independently of the implementation."""
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    if fmt == "raw":
        if role == "prune":
            prompt, response = enc(ex.prompt + "\n"), enc(ex.response)
        else:
            prompt, response = enc(ex.prompt), enc("\n" + ex.response)
    else:
        user = [{"role": "user", "content": ex.prompt}]
        p_text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": ex.response}], tokenize=False)
        prompt, response = enc(p_text), enc(full[len(p_text):])
    ids = prompt + response
    labels = [-100] * (len(prompt) + skip) + response[skip:]
    return ids, labels


def reference_scores(model, tok, examples, score: str, role: str, fmt: str = "raw", skip: int = 0) -> dict:
    """Authors' approach: layer by layer, only that layer trainable, batch size 1, HF loss."""
    encoded = [reference_encode(tok, ex, role, fmt, skip) for ex in examples]
    prefix, blocks = find_decoder_layers(model)
    out = {}
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for i in range(len(blocks)):
            model.requires_grad_(False)
            lin = {f"{prefix}.{i}.{n}": m for n, m in blocks[i].named_modules() if isinstance(m, nn.Linear)}
            for m in lin.values():
                m.weight.requires_grad_(True)
            acc = {n: torch.zeros_like(m.weight) for n, m in lin.items()}
            for ids, labels in encoded:
                model.zero_grad(set_to_none=True)
                loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
                loss.backward()
                for n, m in lin.items():
                    acc[n] += m.weight.grad if score == "signed" else m.weight.grad.abs()
            for n, m in lin.items():
                w = m.weight.detach()
                out[n] = w * acc[n] if score == "signed" else w.abs() * acc[n]
            model.zero_grad(set_to_none=True)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return out


@pytest.mark.parametrize("skip", [0, 2])
@pytest.mark.parametrize("fmt", ["raw", "chat"])
@pytest.mark.parametrize("role", ["prune", "preserve"])
@pytest.mark.parametrize("score", ["signed", "abs"])
def test_scores_match_per_layer_reference(model, tok, score, role, fmt, skip):
    examples = tiny_examples(5, kind="harmful" if role == "prune" else "benign", seed=3)
    fast = compute_scores(model, tok, examples, score=score, role=role, fmt=fmt, skip_response_tokens=skip,
                          batch_size=3, progress=False)
    ref = reference_scores(model, tok, examples, score, role, fmt, skip)
    assert set(fast) == set(ref) and len(fast) == 14
    for name in ref:
        assert fast[name].dtype == torch.float32
        assert relative_error(fast[name], ref[name]) < TOL, name
    assert fast.meta["n_examples"] == 5
    if score == "abs":
        assert all(bool((v >= 0).all()) for v in fast.values())


def test_wanda_matches_reference(model, tok):
    examples = tiny_examples(4, kind="benign", seed=1)
    fast = compute_scores(model, tok, examples, score="wanda", role="preserve", batch_size=3, progress=False)
    linears = decoder_linears(model)
    sq = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    def record(n):
        def hook(mod, inp, out):
            sq[n].add_(inp[0][0].double().pow(2).sum(0))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in linears.items()]
    try:
        with torch.no_grad():
            for ex in examples:
                ids, _ = reference_encode(tok, ex, "preserve", "raw", 0)
                model(input_ids=torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    for n, m in linears.items():
        ref = m.weight.detach().double().abs() * sq[n].sqrt().unsqueeze(0)
        assert relative_error(fast[n], ref) < TOL


def test_benign_newline_is_inside_the_loss(model, tok):
    """Hand-built: harmful gets `tok(prompt + "\\n") + tok(response)`, benign gets
    `tok(prompt) + tok("\\n" + response)`, so only the benign loss contains the newline token."""
    ex = Example(prompt="Is it safe?", response="Yes.", kind="benign")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    (nl,) = enc("\n")
    assert len(enc("?\n")) == 1, "the tiny tokenizer should merge '?\\n' like Llama 3's"

    ids_h, lab_h = tokenize_example(tok, ex, "prune")
    ids_b, lab_b = tokenize_example(tok, ex, "preserve")
    assert ids_h == enc("Is it safe?\n") + enc("Yes.")
    assert ids_b == enc("Is it safe?") + enc("\nYes.")
    assert ids_h != ids_b
    # The harmful prompt ends with the merged "?\n"; its loss is exactly the response tokens.
    assert [t for t in lab_h if t != -100] == enc("Yes.")
    # The benign loss starts with the newline token.
    first = len(enc("Is it safe?"))
    assert lab_b[:first] == [-100] * first and lab_b[first] == nl
    assert [t for t in lab_b if t != -100] == [nl] + enc("Yes.")

    # And it matters: the same examples scored as benign vs as harmful differ substantially.
    exs = tiny_examples(4, kind="benign", seed=5)
    as_benign = compute_scores(model, tok, exs, score="abs", role="preserve", progress=False)
    as_harm = compute_scores(model, tok, exs, score="abs", role="prune", progress=False)
    assert min(relative_error(as_benign[n], as_harm[n]) for n in as_harm) > 0.1  # tens of percent
    assert as_benign.meta["n_loss_tokens"] == as_harm.meta["n_loss_tokens"] + 4


def test_skip_response_tokens_masks_the_first_response_tokens(tok):
    ex = tiny_examples(1, seed=2, min_words=5)[0]
    ids0, lab0 = tokenize_example(tok, ex, "prune")
    ids2, lab2 = tokenize_example(tok, ex, "prune", skip_response_tokens=2)
    assert ids0 == ids2
    first = next(i for i, t in enumerate(lab0) if t != -100)
    assert lab2[:first + 2] == [-100] * (first + 2) and lab2[first + 2:] == lab0[first + 2:]


def test_batch_size_does_not_change_scores(model, tok):
    examples = tiny_examples(5, seed=7)
    for score in ("signed", "abs"):
        a = compute_scores(model, tok, examples, score=score, role="prune", batch_size=1, progress=False)
        b = compute_scores(model, tok, examples, score=score, role="prune", batch_size=5, progress=False)
        for n in a:
            assert relative_error(b[n], a[n]) < TOL


def test_restrict_layers_and_module_types(model, tok):
    s = compute_scores(model, tok, tiny_examples(2), score="signed", role="prune", layers=[1],
                       module_types=["down_proj", "q_proj"], progress=False)
    assert sorted(s) == ["model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(ValueError, match="out of range"):
        decoder_linears(model, layers=[5])
    with pytest.raises(ValueError, match="unknown module_types"):
        decoder_linears(model, module_types=["w1"])


def test_hooks_removed_and_requires_grad_restored(model, tok):
    model.lm_head.weight.requires_grad_(True)
    before = [p.requires_grad for p in model.parameters()]
    compute_scores(model, tok, tiny_examples(2), score="abs", role="prune", progress=False)
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    model.lm_head.weight.requires_grad_(False)


def test_scores_carry_meta_fingerprint_and_probe(model, tok):
    s = compute_scores(model, tok, tiny_examples(2), score="signed", role="prune", progress=False)
    assert isinstance(s, Scores)
    assert s.fingerprint == model_fingerprint(model)
    assert set(s.probe) == set(s)
    assert s.meta["score"] == "signed" and s.meta["accumulator"] == "float32"
    assert s.meta["n_loss_tokens"] < s.meta["n_tokens"]


def test_fingerprint_survives_pruning_but_not_another_model(model):
    fp = model_fingerprint(model)
    w = model.model.layers[0].mlp.down_proj.weight
    saved = w.data[0, :3].clone()
    w.data[0, :3] = 0
    assert model_fingerprint(model) == fp
    w.data[0, :3] = saved
    assert model_fingerprint(tiny_llama(seed=1)) != fp
    assert model_fingerprint(copy.deepcopy(model).to(torch.bfloat16)) == fp


# -- bad input ---------------------------------------------------------------------------------
def test_empty_calibration_set(model, tok):
    with pytest.raises(ValueError, match="empty calibration set"):
        compute_scores(model, tok, [], score="signed", role="prune", progress=False)


def test_empty_response_names_the_example(model, tok):
    exs = tiny_examples(2) + [Example(prompt="Tell me a secret?", response="")]
    with pytest.raises(ValueError, match=r"example 2 \(prompt 'Tell me a secret\?'.*empty response"):
        compute_scores(model, tok, exs, score="signed", role="prune", progress=False)


def test_response_not_longer_than_skip(model, tok):
    exs = [Example(prompt="Why?", response="Because.")]
    n = len(tok("Because.", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="skip_response_tokens"):
        compute_scores(model, tok, exs, score="signed", role="prune", skip_response_tokens=n, progress=False)


def test_model_without_decoder_layers(tok):
    with pytest.raises(ValueError, match="no decoder layers found"):
        compute_scores(nn.Sequential(nn.Linear(3, 3)), tok, tiny_examples(1), score="signed", role="prune",
                       progress=False)


def test_bad_options(model, tok):
    with pytest.raises(ValueError, match="score must be one of"):
        compute_scores(model, tok, tiny_examples(1), score="grad", role="prune", progress=False)
    with pytest.raises(ValueError, match="role must be one of"):
        compute_scores(model, tok, tiny_examples(1), score="signed", role="harmful", progress=False)
    with pytest.raises(RuntimeError, match="inference_mode"):
        with torch.inference_mode():
            compute_scores(model, tok, tiny_examples(1), score="signed", role="prune", progress=False)
    bare = tiny_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        compute_scores(model, bare, tiny_examples(1), score="signed", role="prune", fmt="chat", progress=False)
