"""Where caches (trained organisms, dequantised models, generated data) and results live.

Both default to folders at the repository root when the package runs from a checkout, so a
fresh clone starts empty and `make book` re-runs reuse what the first run made. Override with
the environment variables `HARMPRUNE_CACHE` and `HARMPRUNE_RESULTS`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _in_checkout() -> bool:
    return (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "notebooks").exists()


def cache_dir() -> Path:
    """Folder for trained organisms, model copies and generated datasets (created on demand)."""
    env = os.environ.get("HARMPRUNE_CACHE")
    path = Path(env) if env else (REPO_ROOT / ".cache" if _in_checkout() else Path.home() / ".cache" / "harmprune")
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(model: str | None = None) -> Path:
    """Folder for results JSON, masks and executed notebooks: `results/<model>/`."""
    env = os.environ.get("HARMPRUNE_RESULTS")
    root = Path(env) if env else (REPO_ROOT / "results" if _in_checkout() else Path.cwd() / "results")
    path = root / safe_name(model) if model else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str) -> str:
    """A hub id or path as one folder name (`meta-llama/Llama-3.1-8B` -> `meta-llama--Llama-3.1-8B`)."""
    return str(name).strip("/").replace("/", "--").replace(" ", "_")


def shared_mode(tmp: str | Path) -> None:
    """Give a `mkstemp` file (always 0600) the mode a plain `open` would: results, masks and caches
    are meant to be read by collaborators and cluster jobs of other users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        shared_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
