"""Command line: `python -m replication run <finding|all> --model NAME [-p key=value ...]` and
`python -m replication book`. Errors are one line that says what to do; the exit code is 1."""
from __future__ import annotations

import argparse
import sys

from .device import DEVICES_HELP
from .findings import FINDINGS
from .scales import SCALES


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m replication", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute finding notebooks with papermill into results/<model>/")
    run.add_argument("finding", help=f"one of: all, {', '.join(FINDINGS)}")
    run.add_argument("--model", default=None, help="preset name, hub id or local folder (default: organism-aligned)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a notebook parameter (repeatable), e.g. -p q=1e-3")
    run.add_argument("--scale", choices=SCALES, default="full",
                     help="full: the book's sizes (2 CPU cores); paper: the paper's sizes (a GPU); smoke: tests")
    run.add_argument("--device", default="auto",
                     help=f"where models run: {DEVICES_HELP}; recorded in every result")
    run.add_argument("--force", action="store_true", help="re-execute even if a cached run matches")
    run.add_argument("--no-progress", action="store_true")
    book = sub.add_parser("book", help="build the Jupyter Book into _build/html from the executed notebooks")
    book.add_argument("--models", default="", help="space-separated models to list on the summary page")
    book.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    sub.add_parser("models", help="list the model presets")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from .models import DEFAULT_MODEL
            from .runner import parse_parameters, run
            run(args.finding, args.model or DEFAULT_MODEL, parse_parameters(args.param), scale=args.scale,
                force=args.force, progress=not args.no_progress, device=args.device)
        elif args.command == "book":
            from .book import build
            index = build(args.models.split() or None, strict=not args.no_strict)
            print(f"book: {index}")
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
        if isinstance(err, (RunError, UnknownModelError, ValueError, FileNotFoundError, RuntimeError)):
            print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
