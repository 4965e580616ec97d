"""One writer for every finding's results file, and the masks behind its headline numbers.

`results/<folder>/<finding>.json` (the folder is the model's name, or a pair's for a finding about two
models: `result["folder"]`) carries the finding, model, scale, the full config, package
versions, the hardware, the repository commit, the date, the judge of every metric, the headline with its intervals, and the names of the masks
it rests on; those masks are saved beside it (`results/<model>/<finding>-masks/<name>.safetensors`,
with the config and model fingerprint that made them, as `Mask.save` writes), so a reader can load
the exact pruned model a chapter describes:

    mask = Mask.load(results_dir(model) / result["masks"]["headline"])
    with applied(model, mask): ...
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from .paths import atomic_write_json, results_dir

#: keys every results file has (the book and the verdicts read them)
REQUIRED = ("finding", "model", "scale", "config", "versions", "created_utc", "judges", "headline", "masks")
#: stamped on every result as well, so a number can be cited with what made it
PROVENANCE = ("versions", "hardware", "commit", "created_utc")


def versions() -> dict[str, str]:
    """Versions recorded in every result."""
    import torch
    import transformers
    try:
        from importlib.metadata import version
        pkg = version("harmprune")
    except Exception:
        pkg = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "harmprune": pkg}


def cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo reports it, else `platform.processor()` (None if empty):
    `platform` alone often says only "x86_64", and two x86_64 machines can differ 1.5x in a training step."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware() -> dict[str, Any]:
    """Where a result was computed: platform, CPU model, the vector instructions torch's CPU kernels
    use (AVX2, AVX512, ...: what sets the CPU's matmul rate), the threads torch used, and the
    accelerator if any."""
    import torch
    out: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                           "processor": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


def commit() -> dict[str, Any]:
    """The repository commit the code ran from, and whether the tree had uncommitted changes
    (None where the package does not run from a git checkout)."""
    from .paths import REPO_ROOT

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def plain(obj: Any) -> Any:
    """A config as JSON-able data (dataclasses become dicts)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


def validate(result: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"a results file needs {', '.join(missing)}; build it with results.write_result")
    json.dumps(result, default=str)   # fails loudly on anything that cannot be written


def masks_dir(model: str, finding: str) -> Path:
    return results_dir(model) / f"{finding}-masks"


def write_result(result: dict[str, Any], *, masks: Mapping[str, Any] | None = None, write: bool = True) -> dict[str, Any]:
    """Stamp versions and time, save `masks` (name -> `mask.Mask`) beside the results file, and
    write it atomically. Returns the result with `masks` mapping each name to its path (relative to
    `results/<model>/`). `write=False` only stamps (tests, dry runs)."""
    result = dict(result)
    result.setdefault("versions", versions())
    result.setdefault("hardware", hardware())
    result.setdefault("commit", commit())
    result.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    result["config"] = plain(result.get("config"))
    result["masks"] = {}
    where = result.get("folder") or result["model"]
    if write and masks:
        folder = masks_dir(where, result["finding"])
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for name, mask in masks.items():
            mask.save(tmp / f"{name}.safetensors")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    for name, mask in (masks or {}).items():
        result["masks"][name] = {"path": f"{result['finding']}-masks/{name}.safetensors", "count": mask.count(),
                                 "sha256": mask.digest(), "method": mask.meta.get("method")}
    validate(result)
    if write:
        atomic_write_json(results_dir(where) / f"{result['finding']}.json", result)
    return result


def read_result(model: str, finding: str) -> dict[str, Any]:
    """`model`'s results of `finding`, from its results folder (a pair's folder for a pair finding)."""
    from .findings import FINDINGS
    known = FINDINGS.get(finding)   # any other name (a user's own experiment) is filed under the model
    path = results_dir(known.results_folder(model) if known else model) / f"{finding}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}: run `python -m replication run {finding} --model {model}`")
    return json.loads(path.read_text())


__all__ = ["write_result", "read_result", "versions", "hardware", "commit", "validate", "masks_dir", "REQUIRED",
           "PROVENANCE"]
