"""Execute the finding notebooks with papermill into `results/<model>/`.

A notebook is re-executed only when its inputs changed: the cache key covers the notebook
file, the parameters and the package's source, and is stored in the executed copy's
metadata. A failing cell stops the run with a one-line error naming the notebook and cell.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import progress as _progress
from .device import DeviceError, resolve_device
from .findings import FINDINGS, Finding, finding
from .scales import SCALES
from .paths import PACKAGE_DIR, REPO_ROOT, results_dir, safe_name

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: At most one status line of a running bar per this many seconds, in place on a terminal and as
#: plain lines in a log (messages and finished bars print at once).
STATUS_INTERVAL_S = 5.0
LOG_STATUS_INTERVAL_S = 10.0
#: A bar's "done" line is printed only if the bar ran at least this long (short loops stay quiet).
DONE_LINE_MIN_S = 10.0


class RunError(RuntimeError):
    """A run failed; the message is one line that says what to do."""


def parse_parameters(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn `key=value` strings into papermill parameters (values parsed as Python literals)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise RunError(f"parameter {pair!r} is not key=value (e.g. -p q=1e-3)")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key.isidentifier():
            raise RunError(f"parameter name {key!r} is not a Python identifier")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def source_hash() -> str:
    """Hash of the package's Python source: a code change re-runs the notebooks."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and defaults declared in a notebook's `parameters` cell."""
    import papermill as pm
    return {k: v.get("default") for k, v in pm.inspect_notebook(str(path)).items()}


class ProgressTail:
    """Tail the kernel's progress file (see `replication.progress`) in a background thread and
    print concise status lines to `stream`: in place (`\\r`) on a terminal, plain lines otherwise."""

    def __init__(self, path: str, stream=None, *, poll_s: float = 0.5):
        self.path = path
        self.stream = stream if stream is not None else sys.stderr
        self.poll_s = poll_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._offset = 0
        self._partial = ""
        self._bars: dict[str, dict] = {}
        self._pending: str | None = None      # bar id whose latest state is not printed yet
        self._last_status = time.monotonic()  # the first status line comes after one interval
        self._inplace = False                 # a \r line is on screen (tty only)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="harmprune-progress", daemon=True)

    def start(self) -> "ProgressTail":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        try:
            self._poll(final=True)
        except Exception:  # noqa: BLE001 - progress display must never mask the run's outcome
            pass
        if self._inplace:
            self._write("\r\x1b[K")
            self._inplace = False

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._poll()
            except Exception:  # noqa: BLE001
                pass

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _line(self, text: str) -> None:
        """A permanent line (message, finished bar)."""
        self._write(("\r\x1b[K" if self._inplace else "") + text + "\n")
        self._inplace = False

    def _status(self, text: str) -> None:
        if self.tty:
            self._write("\r\x1b[K" + text)
            self._inplace = True
        else:
            self._write(text + "\n")

    def _read(self) -> list[dict]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except OSError:
            return []
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def _poll(self, final: bool = False) -> None:
        for rec in self._read():
            kind, bar = rec.get("kind"), rec.get("id")
            if kind == "message":
                self._line(_progress.format_record(rec))
            elif kind in ("start", "update"):
                self._bars[bar] = rec
                self._pending = bar
            elif kind == "end":
                self._bars.pop(bar, None)
                if self._pending == bar:
                    self._pending = None
                if (rec.get("elapsed") or 0) >= DONE_LINE_MIN_S:
                    self._line(_progress.format_record(rec))
        now = time.monotonic()
        interval = STATUS_INTERVAL_S if self.tty else LOG_STATUS_INTERVAL_S
        if not final and self._pending is not None and now - self._last_status >= interval:
            rec = self._bars.get(self._pending)
            self._pending = None
            if rec is not None:
                self._last_status = now
                self._status(self._status_text(rec))

    def _status_text(self, rec: dict) -> str:
        """The latest bar's line, after the outermost open bar's when that is another one: inner loops
        (a generation, a scoring pass) update far more often, and alone they would hide how far the
        run itself has come (`generality 14/42 states ... > generate 0/1 batches`)."""
        outer = next(iter(self._bars.values()), None)
        if outer is None or outer is rec:
            return _progress.format_record(rec)
        return _progress.format_record(outer) + "  >  " + _progress.format_record(rec, indent="")


@dataclass
class RunOutcome:
    finding: str
    output: Path
    cached: bool
    seconds: float


def notebook_params(key: "str | Finding", model: str, params: dict[str, Any] | None = None, *, scale: str = "full",
                    device: str = "auto", notebook_dir: Path | None = None) -> dict[str, Any]:
    """The papermill parameters of one run, checked: `-p` names a notebook parameter or a field of
    the finding's config (routed into the notebook's `config` dict, so every size can be raised);
    anything else is an error that lists both."""
    fnd = finding(key) if isinstance(key, str) else key
    src = (notebook_dir or NOTEBOOK_DIR) / fnd.notebook
    if not src.exists():
        shown = src.relative_to(REPO_ROOT) if src.is_relative_to(REPO_ROOT) else src
        raise RunError(f"notebook {shown} for finding {fnd.key!r} does not exist yet; "
                       f"run one of: {', '.join(f.key for f in available_findings())}")
    params = dict(params or {})
    declared = notebook_parameters(src)
    config_fields = set(f.name for f in dataclasses.fields(fnd.config_class)) if fnd.config_class else set()
    routed = {k: params.pop(k) for k in sorted(set(params) - set(declared)) if k in config_fields and "config" in declared}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        fields = f"; or any field of {fnd.config_class.__name__}: {', '.join(sorted(config_fields))}" if routed or config_fields else ""
        raise RunError(f"{fnd.notebook} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(declared)}{fields}")
    if routed:
        config = dict(params.get("config") or {})
        clash = sorted(set(config) & set(routed))
        if clash:
            raise RunError(f"{', '.join(clash)} given both as -p and inside -p config=...: give each once")
        params["config"] = {**config, **routed}
    if "model" in params and params["model"] != model:
        raise RunError(f"give the model with --model, not -p model=... (got --model {model} and -p model={params['model']})")
    scale = str(params.pop("scale", scale))   # -p scale=smoke is the same as --scale smoke
    if scale not in SCALES:
        raise RunError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    device = str(params.pop("device", device))
    try:
        resolve_device(device)   # `--device cuda` without CUDA fails here, before any work
    except DeviceError as err:
        raise RunError(str(err)) from None
    params.update(model=model, scale=scale)
    if "device" in declared:
        params["device"] = device
    elif device != "auto":
        raise RunError(f"{fnd.notebook} has no device parameter")
    return params


@dataclass(frozen=True)
class CacheState:
    """Where one run's executed notebook goes, its content key, and whether a matching run is there."""

    output: Path
    cache_key: str
    params: dict
    fresh: bool


def cache_state(key: "str | Finding", model: str, params: dict[str, Any] | None = None, *, scale: str = "full",
                device: str = "auto", notebook_dir: Path | None = None) -> CacheState:
    """The content cache's view of one run: the key covers the notebook file, the parameters and
    the package source; `fresh` when the executed copy on disk carries that key and succeeded."""
    fnd = finding(key) if isinstance(key, str) else key
    src = (notebook_dir or NOTEBOOK_DIR) / fnd.notebook
    params = notebook_params(fnd, model, params, scale=scale, device=device, notebook_dir=notebook_dir)
    out = results_dir(fnd.results_folder(model, params)) / fnd.notebook
    key_material = json.dumps({"nb": hashlib.sha256(src.read_bytes()).hexdigest(), "params": params,
                               "src": source_hash()}, sort_keys=True, default=str)
    cache_key = hashlib.sha256(key_material.encode()).hexdigest()[:20]
    fresh = False
    if out.exists():
        try:
            meta = json.loads(out.read_text()).get("metadata", {}).get("harmprune", {})
        except (json.JSONDecodeError, OSError):
            meta = {}
        fresh = meta.get("cache_key") == cache_key and meta.get("status") == "ok"
    return CacheState(out, cache_key, params, fresh)


def run_notebook(key: "str | Finding", model: str, params: dict[str, Any] | None = None, *, scale: str = "full",
                 force: bool = False, progress: bool = True, device: str = "auto",
                 notebook_dir: Path | None = None) -> RunOutcome:
    """Execute one finding's notebook for `model`; reuse the executed copy if nothing changed."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    fnd = finding(key) if isinstance(key, str) else key
    nb_dir = notebook_dir or NOTEBOOK_DIR
    src = nb_dir / fnd.notebook
    state = cache_state(fnd, model, params, scale=scale, device=device, notebook_dir=nb_dir)
    params, cache_key, out = state.params, state.cache_key, state.output
    scale = params["scale"]
    out_dir = out.parent
    if not force and state.fresh:
        return RunOutcome(fnd.key, out, True, 0.0)
    tmp = out.with_name(f".{out.name}.running.ipynb")
    start = time.time()
    env_scale = os.environ.get("HARMPRUNE_SCALE")
    os.environ["HARMPRUNE_SCALE"] = scale
    # the kernel inherits this environment: its progress bars append records to this file, which
    # a thread tails to print status lines here (the executed notebook stays free of bars)
    env_progress = os.environ.get(_progress.ENV_VAR)
    fd, progress_path = tempfile.mkstemp(prefix="harmprune-progress-", suffix=".jsonl")
    os.close(fd)
    os.environ[_progress.ENV_VAR] = progress_path
    tail = ProgressTail(progress_path).start()
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                            progress_bar=progress, cwd=str(nb_dir), log_output=False)
    except PapermillExecutionError as err:
        failed = out_dir / f"{fnd.notebook.removesuffix('.ipynb')}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        evalue = str(err.evalue).splitlines()[0] if err.evalue else ""
        raise RunError(f"{fnd.notebook} failed in cell {err.exec_count or err.cell_index} "
                       f"({err.ename}: {evalue}); the executed copy with the traceback is {failed}") from None
    finally:
        tail.stop()
        try:
            os.unlink(progress_path)
        except OSError:
            pass
        if env_scale is None:
            os.environ.pop("HARMPRUNE_SCALE", None)
        else:
            os.environ["HARMPRUNE_SCALE"] = env_scale
        if env_progress is None:
            os.environ.pop(_progress.ENV_VAR, None)
        else:
            os.environ[_progress.ENV_VAR] = env_progress
    nb = json.loads(tmp.read_text())
    for cell in nb.get("cells", []):
        # papermill's injected cell is folded like every other code cell (the book shows outputs first)
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell["metadata"]["tags"] = tags + ["hide-input"]
    nb.setdefault("metadata", {})["harmprune"] = {"cache_key": cache_key, "status": "ok", "model": model,
                                                  "parameters": params, "seconds": round(time.time() - start, 1)}
    tmp.write_text(json.dumps(nb, indent=1))
    os.replace(tmp, out)
    return RunOutcome(fnd.key, out, False, time.time() - start)


def available_findings() -> list:
    return [f for f in FINDINGS.values() if (NOTEBOOK_DIR / f.notebook).exists()]


def run(target: str, model: str, params: dict[str, Any] | None = None, *, scale: str = "full",
        force: bool = False, progress: bool = True, device: str = "auto") -> list[RunOutcome]:
    """Run one finding or `all` (every notebook that exists; the missing ones are named)."""
    from .models import canonical_name, resolve_preset
    resolve_preset(model)  # fail early, with the list of presets, on a bad name
    try:
        resolve_device(device)  # and on a device this machine does not have
    except DeviceError as err:
        raise RunError(str(err)) from None
    model = canonical_name(model)   # a preset's hub id runs (and files its results) as the preset
    scale = str((params or {}).get("scale", scale))
    if target == "all" and params:
        raise RunError("-p parameters go with a single finding (e.g. `run compactness -p q=1e-3`), not with `all`")
    if target == "all":
        keys = [f.key for f in available_findings()]
        missing = [f.notebook for f in FINDINGS.values() if f not in available_findings()]
        if missing:
            print(f"note: not written yet, skipped: {', '.join(missing)}", file=sys.stderr)
    else:
        keys = [finding(target).key]
    outcomes = []
    for i, key in enumerate(keys, 1):
        print(f"[{i}/{len(keys)}] {FINDINGS[key].notebook} on {model} ({scale})", file=sys.stderr, flush=True)
        outcome = run_notebook(key, model, params, scale=scale, force=force, progress=progress, device=device)
        note = "cached, unchanged" if outcome.cached else f"{outcome.seconds:.0f} s"
        print(f"      -> {outcome.output.relative_to(REPO_ROOT) if outcome.output.is_relative_to(REPO_ROOT) else outcome.output} ({note})",
              file=sys.stderr, flush=True)
        outcomes.append(outcome)
    return outcomes


def executed_notebooks() -> dict[str, dict[str, Path]]:
    """finding key -> {model folder name -> executed notebook}, for every run on disk."""
    root = results_dir()
    found: dict[str, dict[str, Path]] = {}
    for f in FINDINGS.values():
        for path in sorted(root.glob(f"*/{f.notebook}")):
            found.setdefault(f.key, {})[path.parent.name] = path
    return found


__all__ = ["RunError", "run", "run_notebook", "notebook_params", "cache_state", "CacheState", "parse_parameters", "executed_notebooks", "safe_name"]
