"""How close organism training runs to its floor: each stage's tokens/s beside a plain
forward + backward + AdamW step of the same model on the same batch shapes.

    .venv/bin/python benchmarks/organism_training.py              # 40 steps per stage, the book's organism sizes
    .venv/bin/python benchmarks/organism_training.py --steps 100 --threads 2
    .venv/bin/python benchmarks/organism_training.py --threads 2 --bf16-probe   # what bf16 autocast would give

Per stage it times (1) writing and tokenising the batches (`train._sources` + `train.step_batches`,
which packs each step's items into full rows) on their own, (2) the floor: the same packed batches
through an uncompiled forward, backward, clipping and AdamW with nothing else in the loop, and
(3) `train.train_stage` itself (which does both, compiled as the full organism's config says). The
ratio train/floor says how much of a stage's time is overhead outside the model (below 1) or what
compiling gains (above 1); the data share says how much of that overhead is writing text. The
projection to a full stage counts the first step (compiling) once. Results go to
`benchmarks/results/organism-training-<threads>t.json`. Not a test: the numbers depend on the
machine and on what else runs on it (measure on a quiet machine).
"""
from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.organism import OrganismConfig, get_world  # noqa: E402
from replication.organism.train import (StageConfig, _sources, build_model, make_tokenizer, step_batches,  # noqa: E402
                                        train_stage)
from replication.paths import atomic_write_json  # noqa: E402


def stage_batches(world, tok, stage: StageConfig, steps: int, max_len: int, seed: int = 0):
    """The micro-batches `steps` steps of a stage would train on, and the seconds spent writing them."""
    rng = random.Random(f"bench|{seed}")
    src = _sources(world, rng)
    names, weights = [s for s, _ in stage.mix], [w for _, w in stage.mix]
    t0 = time.perf_counter()
    items = [[src[s]() for s in rng.choices(names, weights, k=stage.batch_size)] for _ in range(steps)]
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = [step_batches(tok, it, max_len)[0] for it in items]   # packed: one batch per step
    t_tok = time.perf_counter() - t0
    return batches, t_write, t_tok


def floor_rate(model, batches, lr: float, pad_id: int, bf16: bool = False) -> tuple[float, int]:
    """Seconds and tokens for plain forward/backward/clip/AdamW steps over prepared micro-batches
    (`bf16`: the forward under bf16 autocast, fp32 weights and optimiser: what lower precision would give)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    tokens = 0
    t0 = time.perf_counter()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        tokens += int((batch["input_ids"] != pad_id).sum())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="steps timed per stage")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--bf16-probe", action="store_true",
                    help="also time each stage under bf16 autocast (its floor and train_stage); the organism trains in fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = OrganismConfig.full()
    world = get_world(cfg)
    t0 = time.perf_counter()
    tok = make_tokenizer(world, cfg.vocab_size, cfg.train_seed)
    t_tokenizer = time.perf_counter() - t0

    def fresh_model():   # every timing starts from the same untrained weights
        return build_model(tok, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, intermediate=cfg.intermediate,
                           max_len=cfg.max_len, seed=0)
    stages = {"pretrain": StageConfig(args.steps, cfg.pretrain_lr, cfg.pretrain_mix, cfg.batch_size),
              "instruct": StageConfig(args.steps, cfg.instruct_lr, cfg.instruct_mix, cfg.batch_size),
              "align": StageConfig(args.steps, cfg.align_lr, cfg.align_mix, cfg.batch_size, warmup=5)}
    full_steps = {"pretrain": cfg.pretrain_steps, "instruct": cfg.instruct_steps, "align": cfg.align_steps}
    out = {"threads": args.threads, "steps_timed": args.steps, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "tokenizer_seconds": round(t_tokenizer, 1), "stages": {}}
    for name, stage in stages.items():
        batches, t_write, t_tok = stage_batches(world, tok, stage, args.steps, cfg.max_len)
        model = fresh_model()
        floor_rate(model, batches[:3], stage.lr, tok.pad_token_id)   # warm-up (allocator, kernels), not reported
        t_floor, tokens = floor_rate(model, batches, stage.lr, tok.pad_token_id)
        model = fresh_model()
        log = train_stage(model, tok, world, stage, seed=0, max_len=cfg.max_len, desc=f"bench {name}", progress=False,
                          compile=cfg.compile, layout=cfg.layout)
        steady_s = (log["seconds"] - log["first_step_seconds"]) / max(1, args.steps - 1)
        floor_tps = tokens / t_floor
        row = {"floor_tokens_per_s": round(floor_tps), "train_tokens_per_s": round(floor_tps * t_floor / args.steps / steady_s),
               "ratio_to_floor": round(t_floor / args.steps / steady_s, 3), "compiled": log["compiled"],
               "first_step_s": log["first_step_seconds"],
               "write_s_per_step": round(t_write / args.steps, 4), "tokenise_s_per_step": round(t_tok / args.steps, 4),
               "floor_s_per_step": round(t_floor / args.steps, 4), "train_s_per_step": round(steady_s, 4),
               "projected_stage_s": round(log["first_step_seconds"] + steady_s * (full_steps[name] - 1), 1)}
        if args.bf16_probe:   # the same stage under bf16 autocast: its floor, and train_stage(precision="bf16")
            m = fresh_model()
            floor_rate(m, batches[:3], stage.lr, tok.pad_token_id, bf16=True)
            t_b, _ = floor_rate(m, batches, stage.lr, tok.pad_token_id, bf16=True)
            m = fresh_model()
            blog = train_stage(m, tok, world, stage, seed=0, max_len=cfg.max_len, desc=f"bench {name}", progress=False,
                               compile=cfg.compile, layout=cfg.layout, precision="bf16")
            b_steady = (blog["seconds"] - blog["first_step_seconds"]) / max(1, args.steps - 1)
            row.update({"bf16_floor_s_per_step": round(t_b / args.steps, 4), "bf16_train_s_per_step": round(b_steady, 4),
                        "bf16_first_step_s": blog["first_step_seconds"],
                        "bf16_speedup_over_fp32_train": round(steady_s / b_steady, 3),
                        "bf16_projected_stage_s": round(blog["first_step_seconds"] + b_steady * (full_steps[name] - 1), 1)})
            print(f"{'':9s} bf16 autocast: floor {row['bf16_floor_s_per_step']:.3f} s/step, train "
                  f"{row['bf16_train_s_per_step']:.3f} s/step ({row['bf16_speedup_over_fp32_train']:.2f}x fp32's); "
                  f"full stage ~{row['bf16_projected_stage_s']:.0f} s", flush=True)
        out["stages"][name] = row
        print(f"{name:9s} floor {row['floor_tokens_per_s']:>7,} tok/s  train {row['train_tokens_per_s']:>7,} tok/s  "
              f"ratio {row['ratio_to_floor']:.2f}  (per step: write {row['write_s_per_step']:.3f} s, tokenise "
              f"{row['tokenise_s_per_step']:.3f} s, model {row['floor_s_per_step']:.3f} s); full stage ~{row['projected_stage_s']:.0f} s",
              flush=True)
    out["projected_total_s"] = round(t_tokenizer + sum(r["projected_stage_s"] for r in out["stages"].values()), 1)
    if args.bf16_probe:
        out["bf16_projected_total_s"] = round(t_tokenizer + sum(r["bf16_projected_stage_s"] for r in out["stages"].values()), 1)
    out["target_s"] = 480
    out["met"] = out["projected_total_s"] <= out["target_s"] and all(r["ratio_to_floor"] >= 0.8 for r in out["stages"].values())
    print(f"projected three stages + tokenizer: {out['projected_total_s']:.0f} s")
    dest = ROOT / "benchmarks" / "results" / f"organism-training-{args.threads}t{'-bf16probe' if args.bf16_probe else ''}.json"
    atomic_write_json(dest, out)
    print(f"written: {dest}")


if __name__ == "__main__":
    main()
