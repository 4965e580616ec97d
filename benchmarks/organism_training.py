"""How close organism training runs to its floor: each stage's tokens/s beside a plain
forward + backward + AdamW step of the same model on the same batch shapes.

    .venv/bin/python benchmarks/organism_training.py              # 40 steps per stage, the book's organism sizes
    .venv/bin/python benchmarks/organism_training.py --steps 100 --threads 2
    .venv/bin/python benchmarks/organism_training.py --threads 2 --bf16-probe   # what bf16 autocast would give
    .venv/bin/python benchmarks/organism_training.py --threads 2 --head-probe --jobs-probe
    .venv/bin/python benchmarks/organism_training.py --threads 2 --layout-probe   # bucketed against packed rows

Per stage it times (1) writing and tokenising the batches (`train._sources` + `train.step_batches`,
in the organism's layout: length buckets in one row) on their own, (2) the floor: the same batches
through an uncompiled forward, backward, clipping and AdamW with nothing else in the loop, in the
precision the organism trains in on this machine, and (3) `train.train_stage` itself (which does
both, compiled and in the precision the full organism's config resolves to here). The
ratio train/floor says how much of a stage's time is overhead outside the model (below 1) or what
compiling gains (above 1); the data share says how much of that overhead is writing text. The
projection to a full stage counts the first step (compiling) once; `floor_projected_total_s` is
what the recipe's steps cost at the floor's rate, the bound that no loop around the same model,
batches and arithmetic gets far under (compiling fuses element-wise work, 1.0-1.2x here).

The matrix-product bound (`matmul_bound_*`) is lower still: every matrix product a step's forward
and backward make (recorded from the real step, shapes and all), each timed alone on random fp32 data
at its best of several runs, summed over the recipe's steps (fp32 products: where the organism trains
in bf16, its products run faster than this bound's). Attention, normalisation, the loss and
AdamW count as free. No implementation of the same model on the same tokens at this machine's
matrix-product speed trains under it; when it exceeds the 480-s target, the target asks for fewer
steps, tokens or parameters, i.e. another recipe. `peak_matmul_gflops` is a large square product's
rate, the machine's best, for scale.

Probes of what the recipe could still give (each measured, none adopted by the organism):
`--bf16-probe` times bf16 autocast; `--head-probe` the floor with the vocabulary projection only on
labelled positions (`batching.response_loss`: the same loss, less work where prompts are unlabelled);
`--jobs-probe` two 1-thread pretraining floors side by side against one 2-thread floor (what
training two organisms at once would give on two cores); `--layout-probe` the floor on the same items
packed into full 192-token rows (`batching.pack`, the layout before `bucketing`), whose attention
computes every row's whole block-diagonal mask.

Results go to `benchmarks/results/organism-training-<threads>t-<cpu capability>.json`, with the CPU
model and vector ISA (`results.hardware`): the same recipe's step cost differs ~1.4x between an
AVX-512 and an AVX2 machine of this project. Not a test: the numbers depend on the machine and on
what else runs on it (measure on a quiet machine).
"""
from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.organism import OrganismConfig, get_world  # noqa: E402
from replication.organism.train import (StageConfig, _sources, build_model, layout_attention, make_tokenizer,  # noqa: E402
                                        step_batches, train_stage)
from replication.batching import IGNORE, response_loss  # noqa: E402
from replication.paths import atomic_write_json  # noqa: E402
from replication.results import hardware  # noqa: E402


def stage_batches(world, tok, stage: StageConfig, steps: int, max_len: int, layout: str, seed: int = 0):
    """The batches `steps` steps of a stage would train on in `layout` (one per step), and the seconds
    spent writing and laying them out."""
    rng = random.Random(f"bench|{seed}")
    src = _sources(world, rng)
    names, weights = [s for s, _ in stage.mix], [w for _, w in stage.mix]
    t0 = time.perf_counter()
    items = [[src[s]() for s in rng.choices(names, weights, k=stage.batch_size)] for _ in range(steps)]
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = [step_batches(tok, it, max_len, layout)[0] for it in items]   # packed / bucketed: one batch per step
    t_tok = time.perf_counter() - t0
    return batches, t_write, t_tok


def floor_rate(model, batches, lr: float, pad_id: int, layout: str, bf16: bool = False,
               head_on_labels: bool = False) -> tuple[float, int]:
    """Seconds and tokens for plain forward/backward/clip/AdamW steps over prepared batches of `layout`
    (under that layout's attention, `train.layout_attention`; `bf16`: the forward under bf16 autocast,
    fp32 weights and optimiser: what lower precision would give; `head_on_labels`: the loss through
    `response_loss`, the vocabulary projection only where labelled)."""
    with layout_attention(model, layout):
        return _floor_rate(model, batches, lr, pad_id, bf16, head_on_labels)


def _floor_rate(model, batches, lr: float, pad_id: int, bf16: bool, head_on_labels: bool) -> tuple[float, int]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    tokens = 0
    t0 = time.perf_counter()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        tokens += int((batch["input_ids"] != pad_id).sum())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = response_loss(model, **batch) if head_on_labels else model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0, tokens


def warm_floor(model, batches, lr: float, pad_id: int, layout: str, **variant) -> tuple[float, int]:
    """`floor_rate` after three untimed warm-up steps (allocator, kernels); `variant` as `floor_rate`'s."""
    floor_rate(model, batches[:3], lr, pad_id, layout, **variant)
    return floor_rate(model, batches, lr, pad_id, layout, **variant)


class _MatmulShapes(TorchDispatchMode):
    """Records the (m, k, n) of every matrix product dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet in (torch.ops.aten.mm, torch.ops.aten.addmm):
            a, b = args[-2], args[-1]
            self.shapes.append((a.shape[0], a.shape[1], b.shape[1]))
        elif packet in (torch.ops.aten.bmm, torch.ops.aten.baddbmm):
            a, b = args[-2], args[-1]
            self.shapes += [(a.shape[1], a.shape[2], b.shape[2])] * a.shape[0]
        return func(*args, **(kwargs or {}))


def _best_mm_seconds(m: int, k: int, n: int, repeats: int = 5) -> float:
    """The best of `repeats` timings of one fp32 (m x k) @ (k x n) product, each the mean over enough
    back-to-back products to last ~20 ms."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    torch.mm(a, b)
    inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def matmul_bound(model, batches, layout: str) -> dict:
    """Seconds per step that a step's matrix products alone take at their best (see the module
    docstring), from the products the real forward and backward of `batches` make."""
    counts: dict[tuple[int, int, int], int] = {}
    for batch in batches:
        with layout_attention(model, layout), _MatmulShapes() as rec:
            model(**batch, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)
        for shape in rec.shapes:
            counts[shape] = counts.get(shape, 0) + 1
    seconds = sum(c * _best_mm_seconds(*shape) for shape, c in counts.items()) / len(batches)
    flops = sum(c * 2 * m * k * n for (m, k, n), c in counts.items()) / len(batches)
    return {"matmul_gflop_per_step": round(flops / 1e9, 2), "matmul_bound_s_per_step": round(seconds, 4),
            "matmul_gflops_at_step_shapes": round(flops / seconds / 1e9, 1)}


def peak_matmul_gflops(size: int = 1024) -> float:
    """The rate of a large square fp32 product at the current thread count: the machine's best."""
    return round(2 * size ** 3 / _best_mm_seconds(size, size, size) / 1e9, 1)


def _one_thread_floor(args) -> float:
    """A worker of the jobs probe: the floor's seconds for `batches` on one thread, fresh weights."""
    tok, sizes, batches, lr, layout = args
    torch.set_num_threads(1)
    return warm_floor(build_model(tok, **sizes, seed=0), batches, lr, tok.pad_token_id, layout)[0]


def jobs_probe(tok, sizes: dict, batches, lr: float, layout: str, two_thread_s: float) -> dict:
    """Two 1-thread floors at once (two processes) against one 2-thread floor over the same steps:
    `speedup` > 1 means two organisms trained side by side on two cores finish sooner than one after
    the other, each at 2 threads."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        t0 = time.perf_counter()
        each = pool.map(_one_thread_floor, [(tok, sizes, batches, lr, layout)] * 2)
        wall = time.perf_counter() - t0
    sequential = 2 * two_thread_s   # the two runs one after the other, 2 threads each
    return {"one_thread_s_per_step": round(sum(each) / 2 / len(batches), 4),
            "side_by_side_wall_s": round(wall, 1), "sequential_two_thread_s": round(sequential, 1),
            "speedup": round(sequential / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="steps timed per stage")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--bf16-probe", action="store_true",
                    help="also time each stage under bf16 autocast (its floor and train_stage), whatever the organism "
                         "trains in here")
    ap.add_argument("--head-probe", action="store_true",
                    help="also time each stage's floor with the vocabulary projection only on labelled positions")
    ap.add_argument("--layout-probe", action="store_true",
                    help="also time each stage's floor on the same items packed into full rows (the layout before bucketing)")
    ap.add_argument("--jobs-probe", action="store_true",
                    help="also time two 1-thread pretraining floors side by side against one 2-thread floor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = OrganismConfig.full()
    world = get_world(cfg)
    t0 = time.perf_counter()
    tok = make_tokenizer(world, cfg.vocab_size, cfg.train_seed)
    t_tokenizer = time.perf_counter() - t0

    sizes = {"hidden": cfg.hidden, "layers": cfg.layers, "heads": cfg.heads, "intermediate": cfg.intermediate,
             "max_len": cfg.max_len}

    def fresh_model():   # every timing starts from the same untrained weights
        return build_model(tok, **sizes, seed=0)
    stages = {"pretrain": StageConfig(args.steps, cfg.pretrain_lr, cfg.pretrain_mix, cfg.batch_size),
              "instruct": StageConfig(args.steps, cfg.instruct_lr, cfg.instruct_mix, cfg.batch_size),
              "align": StageConfig(args.steps, cfg.align_lr, cfg.align_mix, cfg.batch_size, warmup=5)}
    full_steps = {"pretrain": cfg.pretrain_steps, "instruct": cfg.instruct_steps, "align": cfg.align_steps}
    precision = cfg.resolved().precision   # what the organism trains in on this machine ("auto" resolved)
    bf16 = precision == "bf16"             # every floor runs in that precision
    out = {"threads": args.threads, "steps_timed": args.steps, "machine": hardware(), "precision": precision,
           "layout": cfg.layout,
           "torch": torch.__version__, "tokenizer_seconds": round(t_tokenizer, 1), "stages": {}}
    for name, stage in stages.items():
        batches, t_write, t_tok = stage_batches(world, tok, stage, args.steps, cfg.max_len, cfg.layout)
        t_floor, tokens = warm_floor(fresh_model(), batches, stage.lr, tok.pad_token_id, cfg.layout, bf16=bf16)
        model = fresh_model()
        log = train_stage(model, tok, world, stage, seed=0, max_len=cfg.max_len, desc=f"bench {name}", progress=False,
                          compile=cfg.compile, layout=cfg.layout, precision=precision)
        steady_s = (log["seconds"] - log["first_step_seconds"]) / max(1, args.steps - 1)
        floor_tps = tokens / t_floor
        row = {"floor_tokens_per_s": round(floor_tps), "train_tokens_per_s": round(floor_tps * t_floor / args.steps / steady_s),
               "ratio_to_floor": round(t_floor / args.steps / steady_s, 3), "compiled": log["compiled"],
               "first_step_s": log["first_step_seconds"],
               "write_s_per_step": round(t_write / args.steps, 4), "tokenise_s_per_step": round(t_tok / args.steps, 4),
               "floor_s_per_step": round(t_floor / args.steps, 4), "train_s_per_step": round(steady_s, 4),
               "projected_stage_s": round(log["first_step_seconds"] + steady_s * (full_steps[name] - 1), 1),
               "floor_projected_stage_s": round(t_floor / args.steps * full_steps[name], 1)}
        row.update(matmul_bound(fresh_model(), batches[:8], cfg.layout))
        row["matmul_bound_stage_s"] = round(row["matmul_bound_s_per_step"] * full_steps[name], 1)
        if args.head_probe:   # the same floor, the vocabulary projection only where a label is
            t_h, _ = warm_floor(fresh_model(), batches, stage.lr, tok.pad_token_id, cfg.layout, bf16=bf16,
                                head_on_labels=True)
            unlabelled = sum(int((b["labels"][:, 1:] == IGNORE).sum()) for b in batches) / sum(b["labels"][:, 1:].numel() for b in batches)
            row.update({"unlabelled_share": round(unlabelled, 3), "head_on_labels_floor_s_per_step": round(t_h / args.steps, 4),
                        "head_on_labels_speedup_over_floor": round(t_floor / t_h, 3)})
            print(f"{'':9s} head on labelled positions only ({unlabelled:.0%} unlabelled): floor "
                  f"{row['head_on_labels_floor_s_per_step']:.3f} s/step ({row['head_on_labels_speedup_over_floor']:.2f}x)", flush=True)
        if args.layout_probe and cfg.layout != "packed":   # the floor on the same items packed into full rows
            packed, _, _ = stage_batches(world, tok, stage, args.steps, cfg.max_len, "packed")
            t_p, _ = warm_floor(fresh_model(), packed, stage.lr, tok.pad_token_id, "packed", bf16=bf16)
            row.update({"packed_floor_s_per_step": round(t_p / args.steps, 4),
                        "speedup_over_packed_floor": round(t_p / t_floor, 3),
                        "positions_per_step": round(sum(b["input_ids"].numel() for b in batches) / args.steps),
                        "packed_positions_per_step": round(sum(b["input_ids"].numel() for b in packed) / args.steps)})
            print(f"{'':9s} {cfg.layout} floor {row['floor_s_per_step']:.3f} s/step against packed rows "
                  f"{row['packed_floor_s_per_step']:.3f} s/step ({row['speedup_over_packed_floor']:.2f}x; positions "
                  f"{row['positions_per_step']} against {row['packed_positions_per_step']})", flush=True)
        if args.jobs_probe and name == "pretrain":
            out["jobs_probe"] = jobs_probe(tok, sizes, batches, stage.lr, cfg.layout, t_floor)
            print(f"{'':9s} two 1-thread floors side by side: {out['jobs_probe']['side_by_side_wall_s']:.0f} s against "
                  f"{out['jobs_probe']['sequential_two_thread_s']:.0f} s one after the other at 2 threads "
                  f"({out['jobs_probe']['speedup']:.2f}x)", flush=True)
        if args.bf16_probe:   # the same stage under bf16 autocast: its floor, and train_stage(precision="bf16")
            t_b, _ = warm_floor(fresh_model(), batches, stage.lr, tok.pad_token_id, cfg.layout, bf16=True)
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
    out["floor_projected_total_s"] = round(t_tokenizer + sum(r["floor_projected_stage_s"] for r in out["stages"].values()), 1)
    out["matmul_bound_total_s"] = round(sum(r["matmul_bound_stage_s"] for r in out["stages"].values()), 1)
    out["peak_matmul_gflops"] = peak_matmul_gflops()
    if args.bf16_probe:
        out["bf16_projected_total_s"] = round(t_tokenizer + sum(r["bf16_projected_stage_s"] for r in out["stages"].values()), 1)
    out["target_s"] = 480
    out["each_stage_at_least_0.8x_floor"] = all(r["ratio_to_floor"] >= 0.8 for r in out["stages"].values())
    out["target_within_matmul_bound"] = out["matmul_bound_total_s"] <= out["target_s"]
    out["met"] = out["projected_total_s"] <= out["target_s"] and out["each_stage_at_least_0.8x_floor"]
    print(f"projected three stages + tokenizer: {out['projected_total_s']:.0f} s (at the floor's rate: "
          f"{out['floor_projected_total_s']:.0f} s; the matrix products alone, each at its best: "
          f"{out['matmul_bound_total_s']:.0f} s; target {out['target_s']} s)")
    print(f"matrix products: {out['stages']['pretrain']['matmul_gflops_at_step_shapes']:.0f} GFLOP/s at the "
          f"pretraining step's shapes, {out['peak_matmul_gflops']:.0f} GFLOP/s at 1024^3 ({args.threads} threads)")
    isa = str(out["machine"]["cpu_capability"]).lower()
    probes = "".join(f"-{p}" for p, on in (("bf16probe", args.bf16_probe), ("headprobe", args.head_probe),
                                            ("layoutprobe", args.layout_probe), ("jobsprobe", args.jobs_probe)) if on)
    dest = ROOT / "benchmarks" / "results" / f"organism-training-{args.threads}t-{isa}{probes}.json"
    atomic_write_json(dest, out)
    print(f"written: {dest}")


if __name__ == "__main__":
    main()
