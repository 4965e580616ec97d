"""Command line: `python -m replication run <finding|all> --model NAME [-p key=value ...]`,
`python -m replication book`, and B-TAP as a tool (`prune`, `select`, `apply`; see
`replication.tool`). Errors are one line that says what to do; the exit code is 1."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .device import DEVICES_HELP
from .findings import FINDINGS
from .scales import SCALES


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m replication", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute finding notebooks with papermill into results/<model>/")
    run.add_argument("finding", nargs="+", help=f"one or more of: all, {', '.join(FINDINGS)}")
    run.add_argument("--model", default=None, help="preset name, hub id or local folder (default: organism-aligned)")
    run.add_argument("--models", nargs="+", default=None, metavar="NAME", help="several models (one job each with --executor)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a notebook parameter (repeatable), e.g. -p q=1e-3")
    run.add_argument("--scale", choices=SCALES, default="full",
                     help="full: the book's sizes (2 CPU cores); paper: the paper's sizes (a GPU); smoke: tests")
    run.add_argument("--device", default="auto",
                     help=f"where models run: {DEVICES_HELP}; recorded in every result")
    run.add_argument("--force", action="store_true", help="re-execute even if a cached run matches")
    run.add_argument("--no-progress", action="store_true")
    cl = run.add_argument_group("jobs through submitit (default without --executor: one after another, here)")
    cl.add_argument("--executor", choices=("local", "slurm"), default=None,
                    help="local: local processes; slurm: one Slurm job per (notebook, model)")
    cl.add_argument("--max-parallel", type=int, default=2, help="jobs running at once (local) / array parallelism (slurm)")
    cl.add_argument("--slurm-partition", default=None)
    cl.add_argument("--gpus-per-job", type=int, default=1)
    cl.add_argument("--timeout-min", type=int, default=240)
    cl.add_argument("--mem-gb", type=int, default=64)
    cl.add_argument("--cpus-per-job", type=int, default=8)
    cl.add_argument("--log-dir", default=None, help="submitit's logs (default .cache/submitit/<time>)")
    book = sub.add_parser("book", help="build the Jupyter Book into _build/html from the executed notebooks")
    book.add_argument("--models", default="", help="space-separated models to list on the summary page")
    book.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    sub.add_parser("models", help="list the model presets")
    _tool_parsers(sub)
    return ap


def _run(args: argparse.Namespace) -> int:
    from .models import DEFAULT_MODEL
    from .runner import RunError, parse_parameters, run
    if args.model and args.models:
        raise RunError("give --model NAME or --models A B ..., not both")
    models = args.models or [args.model or DEFAULT_MODEL]
    params = parse_parameters(args.param)
    targets = list(dict.fromkeys(args.finding))
    if "all" in targets and len(targets) > 1:
        raise RunError(f"`all` already runs every finding: give `all` or finding names ({' '.join(targets)})")
    if args.executor is None:
        for model in models:
            for target in targets:
                run(target, model, params, scale=args.scale, force=args.force, progress=not args.no_progress,
                    device=args.device)
        return 0
    from .cluster import SlurmSettings, jobs_for, submit
    jobs = [job for target in targets
            for job in jobs_for(target, models, params, scale=args.scale, device=args.device, force=args.force)]
    slurm = SlurmSettings(partition=args.slurm_partition, gpus_per_job=args.gpus_per_job, timeout_min=args.timeout_min,
                          mem_gb=args.mem_gb, cpus_per_job=args.cpus_per_job)
    outcomes = submit(jobs, args.executor, folder=Path(args.log_dir) if args.log_dir else None,
                      max_parallel=args.max_parallel, slurm=slurm)
    failed = [o for o in outcomes if o.status == "failed"]
    ran = sum(o.status == "ok" for o in outcomes)
    print(f"{len(outcomes)} job(s): {ran} ran, {sum(o.status == 'cached' for o in outcomes)} cached, {len(failed)} failed",
          file=sys.stderr)
    for o in failed:
        print(f"error: {o.job.label}: {o.error} (log: {o.log})", file=sys.stderr)
    return 1 if failed else 0


# -- B-TAP as a tool: prune / select / apply (logic in replication.tool) ---------------------------
def _tool_parsers(sub: Any) -> None:
    from .user_data import FORMAT_HELP
    files = f"JSONL or CSV, {FORMAT_HELP}"
    pr = sub.add_parser("prune", help="B-TAP on your own model and data: write a mask (and optionally the scores)")
    pr.add_argument("--model", required=True, help="preset name, hub id or local folder")
    pr.add_argument("--harmful", required=True, help=f"prune data: {files}")
    pr.add_argument("--benign", required=True, help=f"preserve data: {files}")
    pr.add_argument("--out", required=True, help="mask file (.safetensors; a .json summary and .sparsity.json beside it)")
    pr.add_argument("--scores-out", default=None, help="also keep both score sets in this folder, for `select`")
    pr.add_argument("-p", type=float, default=None, help="benign (protected) top fraction; default: the preset's")
    pr.add_argument("-q", type=float, default=None, help="harmful (candidate) top fraction; default: the preset's")
    pr.add_argument("--scope", default="per_matrix", help="per_matrix (paper: top-k in each weight matrix) or global")
    pr.add_argument("--fmt", default="raw", help="raw (paper: no chat template) or chat (the tokenizer's template)")
    pr.add_argument("--score", default="signed", help="harmful-side score: signed (paper, W*sum g) or abs")
    pr.add_argument("--method", default="btap", help="btap (paper: Q minus P) or next_q")
    pr.add_argument("--skip-response-tokens", type=int, default=0, help="leave the first k response tokens out of the harmful loss")
    pr.add_argument("--batch-size", type=int, default=None, help="scoring batch size (default: the preset's)")
    pr.add_argument("--device", default=None, help=f"{DEVICES_HELP}; default auto")
    pr.add_argument("--dtype", default=None, help="auto, float32, bfloat16 or float16; default: float32 on CPU, bfloat16 on GPU")
    pr.add_argument("--no-progress", action="store_true")
    se = sub.add_parser("select", help="a mask at another p/q from scores kept by `prune --scores-out` (no model needed)")
    se.add_argument("--scores", required=True, help="folder written by prune --scores-out")
    se.add_argument("-q", type=float, required=True, help="harmful (candidate) top fraction")
    se.add_argument("-p", type=float, default=None, help="benign (protected) top fraction; default: the scores' p")
    se.add_argument("--scope", default=None, help="per_matrix or global; default: the scores' scope")
    se.add_argument("--method", default=None, help="btap or next_q; default: the scores' method")
    se.add_argument("--out", required=True, help="mask file (.safetensors)")
    ap_ = sub.add_parser("apply", help="write a pruned model folder (save_pretrained) from a model and its mask")
    ap_.add_argument("--model", required=True, help="the model the mask was made for (preset, hub id or folder)")
    ap_.add_argument("--mask", required=True, help="mask file written by prune or select")
    ap_.add_argument("--out", required=True, help="folder to write (must not exist unless --force)")
    ap_.add_argument("--device", default="cpu", help="where to load the model (default: cpu)")
    ap_.add_argument("--dtype", default="auto", help="saved dtype: auto (the model's own, default), float32, bfloat16, float16")
    ap_.add_argument("--force", action="store_true", help="replace an existing --out folder")
    ap_.add_argument("--no-progress", action="store_true")


def _tool_command(args: argparse.Namespace) -> None:
    """Run a tool command; the package's own warnings (e.g. q rounding to zero candidates in
    small matrices) come out as one `warning: ...` line each, others as Python shows them."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            _tool_dispatch(args)
        finally:
            for w in caught:
                if "replication" in Path(w.filename).parts:
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _tool_dispatch(args: argparse.Namespace) -> None:
    from . import tool
    if args.command == "prune":
        out = tool.prune(args.model, args.harmful, args.benign, args.out, p=args.p, q=args.q, scope=args.scope,
                         fmt=args.fmt, score=args.score, method=args.method,
                         skip_response_tokens=args.skip_response_tokens, batch_size=args.batch_size,
                         device=args.device, dtype=args.dtype, scores_out=args.scores_out,
                         progress=not args.no_progress)
        print(tool.format_report(out))
    elif args.command == "select":
        print(tool.format_report(tool.select(args.scores, args.out, q=args.q, p=args.p, scope=args.scope,
                                             method=args.method)))
    else:
        out = tool.apply(args.model, args.mask, args.out, device=args.device, dtype=args.dtype, force=args.force,
                         progress=not args.no_progress)
        print(f"pruned model: {out}")


TOOL_COMMANDS = ("prune", "select", "apply")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        elif args.command == "book":
            from .book import build
            index = build(args.models.split() or None, strict=not args.no_strict)
            print(f"book: {index}")
        elif args.command in TOOL_COMMANDS:
            _tool_command(args)
        elif args.command == "models":
            from .models import PRESETS
            for p in PRESETS.values():
                print(f"{p.name:32s} {p.source:9s} {p.chat_format:5s} {'aligned' if p.aligned else 'unaligned':9s} {p.description}")
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; the traceback is noise here
        from .models import UnknownModelError
        from .runner import RunError
        from .user_data import ToolError
        if isinstance(err, (RunError, UnknownModelError, ToolError, ValueError, FileNotFoundError, RuntimeError)):
            print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
