"""Importance scores cached on disk, so findings that score the same model on the same data share them.

Compactness, generality and compression all score e.g. `organism-aligned` on the same seeded
calibration samples; within one `make book` the scores are computed once. The key covers
everything the numbers depend on: `scoring.weights_digest` of the model state (a pruned or
fine-tuned copy scores differently, so `scoring.model_fingerprint`, which ignores decoder weights on
purpose, is not enough), the examples' text, the score settings and the scoring code itself. Entries are
one safetensors file (tensors) plus a JSON sidecar (meta, fingerprint, probe), each written
atomically; delete `cache_dir()/scores` at any time.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .data import Example
from .paths import PACKAGE_DIR, atomic_write_json, cache_dir, shared_mode
from .scoring import Scores, compute_scores, weights_digest

#: bump to invalidate every cached score (e.g. a format change)
CACHE_VERSION = 1


def examples_digest(examples: Sequence[Example]) -> str:
    """A digest of the examples' text and labels, in order (order changes summation order)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.prompt, e.response, e.category, e.kind], ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()[:24]


def _code_digest() -> str:
    return hashlib.sha256((PACKAGE_DIR / "scoring.py").read_bytes()).hexdigest()[:12]


def score_key(model, examples: Sequence[Example], settings: dict[str, Any], *, digest: str | None = None) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "weights": digest or weights_digest(model),
                       "data": examples_digest(examples), "settings": settings, "code": _code_digest()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _folder() -> Path:
    path = cache_dir() / "scores"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save(path: Path, scores: Scores) -> None:
    from safetensors.torch import save_file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {f"score/{k}": v.contiguous() for k, v in scores.items()}
        tensors.update({f"probe/{k}": v.contiguous() for k, v in (scores.probe or {}).items()})
        save_file(tensors, tmp)
        shared_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(path.with_suffix(".json"), {"meta": scores.meta, "fingerprint": scores.fingerprint,
                                                  "order": list(scores)})


def _load(path: Path) -> Scores | None:
    from safetensors.torch import load_file
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return None
    info = json.loads(side.read_text())
    tensors = load_file(str(path))
    probe = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("probe/")} or None
    return Scores({k: tensors[f"score/{k}"] for k in info["order"]}, meta=info["meta"],
                  fingerprint=info["fingerprint"], probe=probe)


def save_scores(path: str | Path, scores: Scores) -> Path:
    """Write `scores` in this cache's format (safetensors + JSON sidecar, each atomically) at
    `path` (a `.safetensors` name); for keeping scores outside the cache, e.g. `python -m
    replication prune --scores-out`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, scores)
    return path


def load_scores(path: str | Path) -> Scores:
    """Read scores that `save_scores` wrote (with their meta, fingerprint and probe)."""
    scores = _load(Path(path))
    if scores is None:
        raise FileNotFoundError(f"no saved scores at {path} (and its .json sidecar): write them with save_scores")
    return scores


def cached_scores(model, tokenizer, examples: Sequence[Example], *, score: str, role: str, fmt: str = "raw",
                  skip_response_tokens: int = 0, batch_size: int = 8, digest: str | None = None,
                  use_cache: bool = True, progress: bool = False) -> Scores:
    """`scoring.compute_scores` through the disk cache (same arguments; `digest`: a precomputed
    `weights_digest(model)`, since hashing a large model costs a pass over its weights)."""
    settings = dict(score=score, role=role, fmt=fmt, skip_response_tokens=skip_response_tokens,
                    batch_size=batch_size, dtype=str(next(model.parameters()).dtype))
    if not use_cache:
        return compute_scores(model, tokenizer, examples, score=score, role=role, fmt=fmt,
                              skip_response_tokens=skip_response_tokens, batch_size=batch_size, progress=progress)
    path = _folder() / f"{score_key(model, examples, settings, digest=digest)}.safetensors"
    hit = _load(path)
    if hit is not None:
        return hit
    scores = compute_scores(model, tokenizer, examples, score=score, role=role, fmt=fmt,
                            skip_response_tokens=skip_response_tokens, batch_size=batch_size, progress=progress)
    _save(path, scores)
    return scores


__all__ = ["cached_scores", "save_scores", "load_scores", "weights_digest", "examples_digest", "score_key", "CACHE_VERSION"]
