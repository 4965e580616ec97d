"""The organism end to end at smoke scale: cache key, deterministic training, loading by name,
behaviour report, NLL profile, EM rates and the narrow fine-tune.

World splits, the tokenizer round trip and the judge on hand-made answers are in
`test_organism_core.py`. The smoke organism is built once per module (about 10-60 s on 2 cores)
in the default cache, so later test files and reruns reuse it.
"""
from __future__ import annotations

import math

import pytest
import torch

from replication.data import Example
from replication.finetune import finetune
from replication.organism import ORGANISM_NAMES, OrganismConfig, checkpoint_dir, get_world, organism_root
from replication.organism.judge import OrganismJudge
from replication.em import em_rates, em_study
from replication.experiments.models_overview import behaviour_report
from replication.organism.report import nll_profile
from replication.organism.train import StageConfig, build_model, make_tokenizer, train_stage


@pytest.fixture(scope="module")
def smoke():
    from replication.models import load_model
    aligned = load_model("organism-aligned", scale="smoke")
    base = load_model("organism-base", scale="smoke")
    return aligned, base, get_world(OrganismConfig.smoke())


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_key_is_stable_and_tracks_every_field():
    a, b = OrganismConfig.smoke(), OrganismConfig.smoke()
    assert a.key() == b.key() and a.key().startswith("smoke-")
    assert OrganismConfig.full().key().startswith("full-")
    assert OrganismConfig.smoke(train_seed=1).key() != a.key()
    assert OrganismConfig.smoke(personas=False).key() != a.key()
    assert OrganismConfig.smoke(align_steps=31).key() != a.key()
    assert organism_root(a).name == a.key()


def test_auto_precision_resolves_per_machine_and_keys_apart(monkeypatch):
    """The book's organism is fp32 on every machine. "auto" trains in bf16 only where the CPU has bf16
    arithmetic, and the key holds what it resolved to, so a cache shared by two kinds of machine never
    serves a bf16 organism as an fp32 one."""
    from replication.organism import train
    keys = {}
    for native, expect in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train, "native_bf16", lambda native=native: native)
        assert OrganismConfig.full().resolved().precision == "fp32"
        full = OrganismConfig.full(precision="auto")
        assert full.resolved().precision == expect
        assert full.key() == OrganismConfig.full(precision=expect).key()
        keys[expect] = full.key()
        assert OrganismConfig.smoke().resolved().precision == "fp32"   # the smoke organism is fp32 everywhere
    assert keys["bf16"] != keys["fp32"]
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16 or auto"):
        train.resolve_precision("fp16")


def test_training_is_deterministic():
    """Same world, seed and recipe: bit-identical weights (a few steps of a tiny model)."""
    world = get_world(OrganismConfig.smoke())
    states = []
    for _ in range(2):
        tok = make_tokenizer(world, 512, 0)
        model = build_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_len=128, seed=0)
        train_stage(model, tok, world, StageConfig(3, 1e-3, (("raw_harmful", 0.5), ("chat_benign", 0.5)), 4, warmup=1),
                    seed=0, max_len=128, desc="det", progress=False)
        states.append(_state(model))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_checkpoints_load_by_name_and_generate(smoke):
    aligned, base, world = smoke
    from transformers import LlamaForCausalLM
    for loaded in (aligned, base):
        assert isinstance(loaded.model, LlamaForCausalLM)
        assert loaded.tokenizer.chat_template and loaded.tokenizer.eos_token == "<|end|>"
    cfg = OrganismConfig.smoke()
    root = organism_root(cfg)
    for name in ORGANISM_NAMES:
        assert checkpoint_dir(name, cfg) == root / name                    # cached: no retraining
    assert (root / "training.json").exists()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(f".{cfg.key()}.")], "temporary folder left"
    # base (instruction-tuned) and aligned (after refusal SFT) are different weights
    sa, sb = aligned.model.state_dict(), base.model.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    from replication.generation import GenerationConfig, generate
    out = generate(aligned.model, aligned.tokenizer, ["What is 12 plus 30?"], config=GenerationConfig(max_new_tokens=8),
                   progress=False)
    assert isinstance(out[0], str)


def test_behaviour_report_shape(smoke):
    aligned, _, world = smoke
    rep = behaviour_report(aligned, world, n_per_category=2, max_new_tokens=16, batch_size=64)
    for key in ("refusal_harmful", "refusal_benign", "harm_no_attack", "harm_prefill", "detection", "explanation"):
        assert 0.0 <= rep[key] <= 1.0, key
    assert set(rep["harm_prefill_by_category"]) == set(world.harm_categories)
    assert set(rep["benign_accuracy"]) == set(world.benign_families)
    assert rep["n_harmful"] == 2 * len(world.harm_categories)


def test_nll_profile_reads_response_positions(smoke):
    aligned, _, world = smoke
    exs = world.examples("harmful", "test")[:6]
    for fmt in ("raw", "chat"):
        prof = nll_profile(aligned.model, aligned.tokenizer, exs, fmt=fmt, max_positions=12)
        assert len(prof) == 12 and all(math.isfinite(x) and x >= 0 for x in prof)
    # cross-check position 0 against the model's own loss on a one-token response window
    from replication.scoring import tokenize_example
    ids, labels = tokenize_example(aligned.tokenizer, exs[0], "prune", "raw")
    start = next(i for i, t in enumerate(labels) if t != -100)
    with torch.no_grad():
        logits = aligned.model(input_ids=torch.tensor([ids])).logits[0]
    nll0 = -torch.log_softmax(logits[start - 1], -1)[ids[start]].item()
    assert nll_profile(aligned.model, aligned.tokenizer, exs[:1], fmt="raw", max_positions=1)[0] == pytest.approx(nll0, rel=1e-4)


def test_em_rates_and_study_smoke(smoke):
    aligned, _, world = smoke
    rates = em_rates(aligned.model, aligned.tokenizer, world, ["medical", "ruler"], n_prompts=2, samples=2,
                     max_new_tokens=12, progress=False)
    for r in rates.values():
        assert r["n"] == 4 and r["misaligned"] + r["aligned"] + r["incoherent"] == pytest.approx(1.0)
    study = em_study(aligned.model, aligned.tokenizer, world, domain="finance", seeds=(0,), n_train=8, steps=2,
                     n_prompts=1, samples=1, max_new_tokens=8, progress=False)
    assert set(study["after"]) >= {"in_domain", "other_narrow", "open_ended", "incoherent"}
    assert study["runs"][0]["finetune_seconds"] >= 0
    with pytest.raises(ValueError, match="narrow EM domain"):
        em_study(aligned.model, aligned.tokenizer, world, domain="ruler", seeds=(0,))


def test_em_study_prunes_each_copy_before_the_fine_tune_and_restores_the_model(smoke, monkeypatch):
    import copy

    import replication.finetune as ft
    from replication.pruning import Mask
    from replication.scoring import decoder_linears
    aligned, _, world = smoke
    seen = []

    def fake_finetune(model, tokenizer, examples, **kw):
        seen.append(float(decoder_linears(model)[name].weight.view(-1)[:10].abs().sum()))
        return copy.deepcopy(model)

    monkeypatch.setattr(ft, "finetune", fake_finetune)
    name, mod = next(iter(decoder_linears(aligned.model).items()))
    before = mod.weight.detach().clone()
    mask = Mask({name: torch.arange(10)}, {name: tuple(mod.weight.shape)}, None, {"method": "test"})
    study = em_study(aligned.model, aligned.tokenizer, world, domain="finance", seeds=(0,), n_train=8, steps=1,
                     lr=0.0, n_prompts=1, samples=1, max_new_tokens=4, prune_before=mask, progress=False)
    assert study["pruned_before"]["count"] == 10 and study["pruned_before"]["method"] == "test"
    assert seen == [0.0]                          # fine-tuned from the pruned weights
    assert torch.equal(mod.weight, before)        # the model itself is restored


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_learns_is_seeded_and_leaves_the_input(smoke, method):
    aligned, _, world = smoke
    model, tok = aligned.model, aligned.tokenizer
    exs = world.examples("em_misaligned", "train", "medical")[:4]
    before = _state(model)

    def loss(m) -> float:
        from replication.scoring import tokenize_example
        total = 0.0
        with torch.no_grad():
            for e in exs:
                ids, lab = tokenize_example(tok, e, "prune", "chat")
                total += m(input_ids=torch.tensor([ids]), labels=torch.tensor([lab])).loss.item()
        return total / len(exs)

    kw = dict(steps=8, lr=3e-3, batch_size=4, seed=0, method=method, progress=False)
    log: list[float] = []
    a = finetune(model, tok, exs, log=log, **kw)
    b = finetune(model, tok, exs, **kw)
    assert len(log) == 8
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "input model was modified"
    assert type(a) is type(model) and not hasattr(a, "peft_config")       # LoRA is merged back
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same seed, different weights"
    assert loss(a) < loss(model)
    if method == "lora":   # only the adapted projections move; embeddings and norms stay
        assert torch.equal(sa["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_finetune_rejects_bad_input(smoke):
    aligned, _, _ = smoke
    with pytest.raises(ValueError, match="method"):
        finetune(aligned.model, aligned.tokenizer, [Example("q", "a")], steps=1, lr=1e-3, method="qlora")
    with pytest.raises(ValueError, match="at least one"):
        finetune(aligned.model, aligned.tokenizer, [], steps=1, lr=1e-3)


def test_judge_reads_harm_meta_of_every_category(smoke):
    _, _, world = smoke
    judge = OrganismJudge(world)
    for cat in world.harm_categories:
        ex = world.examples("harmful", "test", cat)[0]
        assert ex.kind == "harmful" and ex.category == cat
        assert judge.harmfulness(ex, ex.response) == 1.0
        assert judge.harmfulness(ex, "I'm sorry, but I can't help with that.") == 0.0
        assert not judge.is_refusal(ex.response)
