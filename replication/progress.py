"""Progress of long loops, visible both interactively and through the notebook runner.

`progress_bar(...)` is a drop-in for the `tqdm(...)` calls of the long loops (organism training,
fine-tuning, scoring, generation). It does two independent things:

* when `enabled`, it shows an ordinary tqdm bar (interactive use, a notebook run by hand);
* when the environment variable `HARMPRUNE_PROGRESS_FILE` names a file (the runner sets it for
  the kernel of every notebook it executes), it appends one-line JSON records to that file:
  a `start` record, throttled `update` records (at most one per `RECORD_INTERVAL_S` per bar) and
  an `end` record, whether or not `enabled` is set. The notebooks pass `progress=False`, so the
  executed notebooks stay free of bars while the runner (`replication.runner`) tails the file and
  prints concise status lines to its stderr.

`report(message)` appends a one-off status line (and prints it when `enabled`).

Record fields: `kind` ("start" | "update" | "end" | "message"), `id` (unique per bar), `desc`,
`n`, `total` (or null), `unit`, `elapsed` (s), `rate` (units/s, or null: counted from the end of the first
unit once there are two, since the first carries the warm-up, a `torch.compile` or a cache fill, that the
rest do not), `postfix` (str or null),
`first_unit` (true while the rate is the first unit's alone: no estimate is shown from it),
`message` (message records only), `time` (epoch s).
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import Any, Iterable, Iterator

ENV_VAR = "HARMPRUNE_PROGRESS_FILE"
#: At most one `update` record per bar per this many seconds (start and end records always go out).
RECORD_INTERVAL_S = 2.0

_ids = itertools.count()
_lock = threading.Lock()


def progress_file() -> str | None:
    """The file records go to (from `HARMPRUNE_PROGRESS_FILE`), or None when not under the runner."""
    return os.environ.get(ENV_VAR) or None


def _append(record: dict[str, Any], path: str | None = None) -> None:
    path = path or progress_file()
    if not path:
        return
    line = json.dumps(record, default=str) + "\n"
    try:
        with _lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError:
        pass   # progress must never break the computation it reports on


def report(message: str, *, enabled: bool = True) -> None:
    """A one-off status line: printed when `enabled`, recorded for the runner when it is listening."""
    if enabled:
        print(message, flush=True)
    _append({"kind": "message", "message": str(message), "pid": os.getpid(), "time": time.time()})


def singular(unit: str) -> str:
    """'steps' -> 'step', 'batches' -> 'batch' (for "s per <unit>" when a loop is slower than 1/s)."""
    for suffix in ("ches", "shes", "sses", "xes"):
        if unit.endswith(suffix):
            return unit[:-2]
    return unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit


class ProgressBar:
    """What `progress_bar` returns: the subset of tqdm's interface the loops use.

    Iterate over it (when built with an iterable), or call `update(n)`; `set_postfix(...)`,
    `set_description(...)`, `close()`; usable as a context manager. `n` and `total` as in tqdm.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 enabled: bool = True, unit: str = "it", **tqdm_kwargs: Any):
        from tqdm.auto import tqdm
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.postfix: str | None = None
        self._path = progress_file()
        # under the runner (a progress file) the bar is its status lines, never tqdm output in the executed
        # notebook: a caller that left `enabled` on (a model trained on first use, say) must not fill the book
        self._tqdm = tqdm(total=total, desc=desc, unit=unit, disable=not enabled or bool(self._path), **tqdm_kwargs)
        self._id = f"{os.getpid()}-{next(_ids)}"
        self._t0 = time.monotonic()
        self._first_done: tuple[float, float] | None = None   # (n, time) when the first unit completed
        self._last_record = self._t0
        self._closed = False
        self._record("start")

    # -- records -----------------------------------------------------------------------------
    def _record(self, kind: str) -> None:
        if not self._path:
            return
        now = time.monotonic()
        elapsed = now - self._t0
        _append({"kind": kind, "id": self._id, "desc": self.desc, "n": self.n, "total": self.total,
                 "unit": self.unit, "elapsed": round(elapsed, 3), "rate": self._rate(now),
                 "first_unit": self._first_done is not None and self.n <= self._first_done[0],
                 "postfix": self.postfix, "pid": os.getpid(), "time": time.time()}, self._path)

    def _rate(self, now: float) -> float | None:
        """Units per second after the first unit (whose warm-up would skew the estimate for a long
        while: an 87-s compile before 0.4-s steps read as "eta 36h"), or over all of them while only
        the first is done."""
        if self._first_done is not None and self.n > self._first_done[0] and now > self._first_done[1]:
            n0, t0 = self._first_done
            return round((self.n - n0) / (now - t0), 4)
        elapsed = now - self._t0
        return round(self.n / elapsed, 4) if elapsed > 0 and self.n else None

    def _maybe_record(self) -> None:
        if self._path:
            now = time.monotonic()
            if now - self._last_record >= RECORD_INTERVAL_S:
                self._last_record = now
                self._record("update")

    # -- the tqdm-like interface -------------------------------------------------------------
    def update(self, n: float = 1) -> None:
        self.n += n
        if self._first_done is None:
            self._first_done = (self.n, time.monotonic())
        self._tqdm.update(n)
        self._maybe_record()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress_bar(...) was built without an iterable; call update() instead")
        try:
            for obj in self.iterable:
                yield obj
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("progress bar without a total has no length")
        return int(self.total)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        self._tqdm.set_postfix(ordered_dict, refresh=refresh, **kwargs)
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items()) or None

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""
        self._tqdm.set_description(desc, refresh=refresh)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tqdm.close()
        self._record("end")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str,
                 enabled: bool = True, unit: str = "it", **tqdm_kwargs: Any) -> ProgressBar:
    """A tqdm-like bar over `iterable` (or of `total` units, advanced with `update`).

    Shows a tqdm bar when `enabled` and no runner listens; when `HARMPRUNE_PROGRESS_FILE` is set, writes
    start / throttled update / end records there for the runner instead (whatever `enabled` says). Extra keyword arguments (e.g.
    `leave=False`) go to tqdm.
    """
    return ProgressBar(iterable, total=total, desc=desc, enabled=enabled, unit=unit, **tqdm_kwargs)


# ---- the runner's side: turn records into status lines ---------------------------------------

def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m{s:02d}s" if m < 10 else f"{m}m"
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m"


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def format_record(rec: dict[str, Any], indent: str = "      ") -> str:
    """One status line for a bar record, e.g. `organism pretrain  1200/3000 steps  4.1 steps/s  eta 7m`."""
    if rec.get("kind") == "message":
        return f"{indent}{rec.get('message', '')}"
    n, total, unit = rec.get("n") or 0, rec.get("total"), rec.get("unit") or "it"
    parts = [str(rec.get("desc") or "progress"),
             f"{_count(n)}/{_count(total)} {unit}" if total else f"{_count(n)} {unit}"]
    rate = rec.get("rate")
    if rec.get("kind") == "end":
        parts.append(f"done in {_duration(rec.get('elapsed') or 0)}")
    else:
        if rate and rec.get("first_unit") and total and total > n:   # warm-up included: no estimate yet
            parts.append(f"first {singular(unit)} took {_duration(rec.get('elapsed') or 0)} (warm-up included; estimate from the next)")
        elif rate:
            parts.append(f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s per {singular(unit)}")
        if rate and total and total > n and not rec.get("first_unit"):
            parts.append(f"eta {_duration((total - n) / rate)}")
        elif rec.get("kind") == "start":
            parts.append("started")
        elif not rate:
            parts.append(f"{_duration(rec.get('elapsed') or 0)} elapsed")
    if rec.get("postfix"):
        parts.append(str(rec["postfix"]))
    return indent + "  ".join(parts)


__all__ = ["ENV_VAR", "RECORD_INTERVAL_S", "ProgressBar", "progress_bar", "report", "progress_file",
           "format_record"]
