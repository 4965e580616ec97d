"""How long B-TAP's two scoring passes take on SmolLM2-135M-Instruct with its real calibration data.

    .venv/bin/python benchmarks/calibration_smollm2.py            # 412 harmful + 412 benign (the paper's nsamples)
    .venv/bin/python benchmarks/calibration_smollm2.py --n 64     # a quicker measurement, extrapolated to 412

The paper scores 412 harmful (prune) examples with the signed score and as many benign (preserve)
examples with the absolute score. Here the harmful examples are SmolLM2-135M-Instruct's own
answers to Do-Not-Answer/HarmBench train prompts and the benign ones its answers to the project's
benign instructions (`self_generated.harmful_prune_set` / `benign_preserve_set`, generated once and cached;
generation is not timed), in the paper's raw format. The target for 2 CPU cores is 20 minutes for
both passes at n = 412. Results go to `benchmarks/results/calibration-smollm2-<device>.json`.
Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication import self_generated  # noqa: E402
from replication.models import load_model  # noqa: E402
from replication.paths import atomic_write_json  # noqa: E402
from replication.scoring import compute_scores  # noqa: E402

PAPER_N = 412
TARGET_SECONDS = 20 * 60


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=PAPER_N, help="examples per side (default 412, the paper's nsamples)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's score_batch_size")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.n < 1:
        sys.exit("--n must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model("smollm2-135m-instruct", device=args.device)
    harmful = self_generated.harmful_prune_set(loaded.name, n=args.n)
    benign = self_generated.benign_preserve_set(loaded.name, n=args.n)
    if len(harmful) < args.n or len(benign) < args.n:
        print(f"note: only {len(harmful)} harmful / {len(benign)} benign answers are available in the train split "
              f"(refusals dropped); timing those", file=sys.stderr)
    bs = args.batch_size or loaded.preset.score_batch_size
    print(f"smollm2-135m-instruct on {args.device}, {torch.get_num_threads()} threads, batch {bs}: "
          f"{len(harmful)} harmful + {len(benign)} benign examples")
    # warm-up (allocator, kernels) on two examples, not timed
    compute_scores(loaded.model, loaded.tokenizer, harmful[:2], score="signed", role="prune", batch_size=2,
                   progress=False)
    results = {}
    for key, exs, score, role in (("signed_harmful", harmful, "signed", "prune"),
                                  ("abs_benign", benign, "abs", "preserve")):
        t0 = time.perf_counter()
        s = compute_scores(loaded.model, loaded.tokenizer, exs, score=score, role=role, fmt="raw", batch_size=bs)
        dt = time.perf_counter() - t0
        results[key] = {"examples": len(exs), "tokens": s.meta["n_tokens"], "seconds": round(dt, 1),
                        "seconds_per_example": round(dt / len(exs), 3),
                        "tokens_per_s": round(s.meta["n_tokens"] / dt, 1)}
        print(f"  {key:<15} {len(exs)} examples, {s.meta['n_tokens']} tokens: {dt:.1f} s "
              f"({s.meta['n_tokens'] / dt:.1f} tokens/s)")
        del s
    at_paper_n = sum(r["seconds_per_example"] for r in results.values()) * PAPER_N
    report = {
        "model": "smollm2-135m-instruct", "device": args.device, "batch_size": bs, "format": "raw",
        "results": results,
        "seconds_for_412_plus_412": round(at_paper_n, 1),
        "extrapolated": any(r["examples"] != PAPER_N for r in results.values()),
        "target_seconds": TARGET_SECONDS, "met": at_paper_n <= TARGET_SECONDS,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    print(f"412 + 412 examples: {at_paper_n / 60:.1f} min"
          + (" (extrapolated from the per-example rate)" if report["extrapolated"] else "")
          + f"; target <= {TARGET_SECONDS // 60} min: {'met' if report['met'] else 'NOT met'}")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"calibration-smollm2-{args.device}.json"
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
