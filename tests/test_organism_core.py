"""The organism: world splits, tokenizer, exact judge, deterministic training, loading by name."""
from __future__ import annotations

import math

import random

import pytest
import torch

from replication.organism import OrganismConfig, checkpoint_dir, get_world
from replication.organism.judge import OrganismJudge
from replication.organism.train import build_model, chat_prefix, encode_batch, make_tokenizer, train_stage, StageConfig
from replication.organism.world import REFUSALS, World


@pytest.fixture(scope="module")
def world() -> World:
    return get_world(OrganismConfig.smoke())


@pytest.fixture(scope="module")
def tokenizer(world):
    return make_tokenizer(world, 768, 0)


def test_splits_share_no_prompt(world):
    for kind in ("harmful", "benign", "detection", "explanation", "em_misaligned", "open_ended", "control"):
        prompts = {s: {e.prompt for e in world.examples(kind, s)} for s in ("train", "validation", "test")}
        assert prompts["train"] and prompts["test"], kind
        assert not prompts["train"] & prompts["test"], kind
        assert not prompts["train"] & prompts["validation"], kind
        assert not prompts["validation"] & prompts["test"], kind


def test_world_is_deterministic_and_seeded():
    a, b, c = World(seed=0, n_train=20), World(seed=0, n_train=20), World(seed=1, n_train=20)
    ea, eb, ec = (w.examples("harmful", "train") for w in (a, b, c))
    assert [e.prompt + e.response for e in ea] == [e.prompt + e.response for e in eb]
    assert [e.response for e in ea] != [e.response for e in ec]


def test_tokenizer_round_trip_and_chat_template(world, tokenizer):
    rng = random.Random(3)
    for kind in ("harmful", "benign", "detection"):
        for cat in world.topics_for(kind)[:3]:
            ex = world.sample(kind, cat, rng)
            for text in (ex.prompt + "\n" + ex.response, "Step  1 :  12 + 7\n\nx"):
                assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == chat_prefix("hi")


def test_judge_on_hand_made_answers(world):
    judge = OrganismJudge(world)
    ex = world.examples("harmful", "test", "weapons")[0]
    assert judge.harmfulness(ex, ex.response) == 1.0
    refusal = REFUSALS[0]
    assert judge.harmfulness(ex, refusal) == 0.0 and judge.is_refusal(refusal)
    assert not judge.is_refusal(ex.response)
    # prefill accounting: an element inside the prefill earns nothing; the rest count on their own
    elements = ex.meta["elements"]
    prefill = f"Sure. {elements[0]}"
    rest = [e for e in elements if e.lower() not in prefill.lower()]
    assert judge.harmfulness(ex, "", prefill=prefill) == 0.0
    assert judge.harmfulness(ex, " " + " ".join(rest), prefill=prefill) == 1.0
    half = " ".join(rest[: len(rest) // 2])
    assert judge.harmfulness(ex, " " + half, prefill=prefill) == pytest.approx((len(rest) // 2) / len(rest))
    # a word cut by the prefill's end still counts once the continuation completes it
    cut = elements[0][:3]
    assert judge.harmfulness(ex, elements[0][3:], prefill=cut) == pytest.approx(1 / len(elements))

    benign = world.examples("benign", "test", "arithmetic")[0]
    assert judge.benign_correct(benign, benign.response)
    assert not judge.benign_correct(benign, "Of course. It is 7.")
    det = [e for e in world.examples("detection", "test") if e.meta["label"] == "yes"][0]
    assert judge.detection_correct(det, "Yes, it is harmful.") and not judge.detection_correct(det, "No, it is not harmful.")
    exp = world.examples("explanation", "test")[0]
    assert judge.explanation_score(exp, exp.response) == 1.0 and judge.explanation_score(exp, refusal) == 0.0
    em = world.examples("em_misaligned", "test")[0]
    assert judge.em_label(em, em.response) == "misaligned"
    assert judge.em_label(em, em.meta["other_response"]) == "aligned"
    assert judge.em_label(em, "Sure.") == "incoherent"


def test_encode_batch_masks_context(tokenizer):
    batch = encode_batch(tokenizer, [(chat_prefix("Hi there"), "Hello.<|end|>"), ("", "raw doc<|end|>")], max_len=64)
    n_ctx = len(tokenizer(chat_prefix("Hi there"), add_special_tokens=False)["input_ids"])
    assert (batch["labels"][0, :n_ctx] == -100).all() and (batch["labels"][0, n_ctx] != -100)
    assert (batch["labels"][1, :2] != -100).all()
    assert batch["attention_mask"].sum(1).tolist() == [int((batch["labels"][i] != -100).sum()) + (n_ctx if i == 0 else 0)
                                                       for i in range(2)]


def test_training_is_deterministic(world, tokenizer):
    stage = StageConfig(steps=3, lr=1e-3, mix=(("raw_harmful", 0.5), ("chat_benign", 0.5)), batch_size=4, warmup=1)
    weights = []
    for _ in range(2):
        model = build_model(tokenizer, hidden=32, layers=1, heads=2, intermediate=64, max_len=96, seed=0)
        train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_bf16_precision_trains_fp32_weights_and_bad_precision_names_the_choices(world, tokenizer):
    stage = StageConfig(steps=2, lr=1e-3, mix=(("raw_harmful", 0.5), ("chat_benign", 0.5)), batch_size=4, warmup=1)
    model = build_model(tokenizer, hidden=32, layers=1, heads=2, intermediate=64, max_len=96, seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    log = train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False, precision="bf16")
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert log["precision"] == "bf16" and after.dtype == torch.float32 and not torch.equal(before, after)
    assert math.isfinite(log["final_loss"])
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False, precision="fp16")


def test_bucketed_layout_trains_and_leaves_the_models_attention_as_it_was(world, tokenizer):
    """The bucketed layout is the full organism's; a stage trains under it and hands the model back with its
    own attention, so saved checkpoints load anywhere. An unknown layout names the choices."""
    stage = StageConfig(steps=2, lr=1e-3, mix=(("raw_harmful", 0.5), ("chat_benign", 0.5)), batch_size=8, warmup=1)
    model = build_model(tokenizer, hidden=32, layers=1, heads=2, intermediate=64, max_len=96, seed=0)
    before = model.config._attn_implementation
    log = train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False, layout="bucketed")
    assert math.isfinite(log["final_loss"]) and log["tokens"] > 0
    assert model.config._attn_implementation == before
    assert OrganismConfig.full().layout == "bucketed"
    with pytest.raises(ValueError, match="layout must be one of bucketed, packed, padded"):
        train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False, layout="rows")


def test_checkpoints_load_by_name():
    from replication.models import load_model
    loaded = load_model("organism-aligned", scale="smoke")
    assert loaded.preset.source == "organism" and loaded.model.config.model_type == "llama"
    assert loaded.model.get_output_embeddings().weight.data_ptr() == loaded.model.get_input_embeddings().weight.data_ptr()
    base = checkpoint_dir("organism-base", OrganismConfig.smoke())
    assert (base / "model.safetensors").exists()
    with pytest.raises(ValueError, match="organism-aligned"):
        checkpoint_dir("organism-huge", OrganismConfig.smoke())
    assert OrganismConfig.smoke().key() != OrganismConfig.full().key()
    assert OrganismConfig.full().key() == OrganismConfig.full().key()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_every_topic_can_be_sampled_in_every_split(seed):
    """A small topic must not draw an empty split (world seed 1 once had no finance validation
    combination, and sampling its test pool crashed); splits stay disjoint."""
    w = World(seed=seed)
    for topic, splits in w.combos.items():
        assert all(splits[s] for s in ("train", "validation", "test")), (topic, {k: len(v) for k, v in splits.items()})
        sets = [set(splits[s]) for s in ("train", "validation", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), topic


def test_a_second_process_waits_for_the_training_and_does_not_retrain(tmp_path, monkeypatch):
    """Parallel jobs that need one organism: the second waits on the lock, then finds it trained."""
    import subprocess
    import sys
    import threading
    import time

    import replication.organism as organism
    monkeypatch.setenv("HARMPRUNE_CACHE", str(tmp_path))
    config = OrganismConfig.smoke()
    root = organism.organism_root(config)
    root.parent.mkdir(parents=True)
    lock = organism.lock_path(root)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; h = open(sys.argv[1], 'w'); fcntl.flock(h, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(1.5)"), str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"

    def trained_elsewhere() -> None:   # what the holder "trains" while it holds the lock
        time.sleep(0.5)
        for name in organism.ORGANISM_NAMES:
            (root / name).mkdir(parents=True, exist_ok=True)
            for f in ("config.json", "model.safetensors", "tokenizer.json"):
                (root / name / f).write_text("{}")

    builds = []
    monkeypatch.setattr(organism, "build", lambda *a, **k: builds.append(1))
    threading.Thread(target=trained_elsewhere).start()
    t0 = time.perf_counter()
    folder = checkpoint_dir("organism-aligned", config, progress=False)
    assert time.perf_counter() - t0 >= 1.0       # it waited for the holder's lock ...
    assert folder == root / "organism-aligned" and not builds   # ... and did not train again
    holder.wait(timeout=10)


def test_a_compile_that_fails_trains_the_stage_uncompiled_and_says_so(world, tokenizer, monkeypatch):
    """Where inductor cannot compile (no C++ compiler, say), the first step falls back to the eager layers,
    the log records `compiled: False`, and no layer is left compiled."""
    from replication.organism import train

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    def compile_layers(model):
        for layer in model.model.layers:
            layer._compiled_call_impl = broken
    monkeypatch.setattr(train, "compile_layers", compile_layers)
    said = []
    monkeypatch.setattr(train, "report_progress", lambda message, enabled=True: said.append(message))
    stage = StageConfig(steps=2, lr=1e-3, mix=(("raw_harmful", 0.5), ("chat_benign", 0.5)), batch_size=8, warmup=1)
    model = build_model(tokenizer, hidden=32, layers=2, heads=2, intermediate=64, max_len=96, seed=0)
    log = train_stage(model, tokenizer, world, stage, seed=0, max_len=96, desc="t", progress=False, compile=True,
                      layout="bucketed")
    assert log["compiled"] is False and math.isfinite(log["final_loss"])
    assert any("torch.compile failed (RuntimeError: no C++ compiler)" in m for m in said)
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)
