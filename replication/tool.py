"""B-TAP as a tool on your own model and data: score once, select a mask, write a pruned model.

    python -m replication prune --model NAME --harmful harmful.jsonl --benign benign.csv \\
        --out mask.safetensors [--scores-out scores/]
    python -m replication select --scores scores/ -q 2e-5 --out mask-q2e-5.safetensors
    python -m replication apply --model NAME --mask mask.safetensors --out pruned-model/

`prune` is the paper's B-TAP (`pruning.btap_scores` then `pruning.select_btap`) on the user's files
(`user_data.read_examples`), with the model preset's p/q unless given. It writes the mask as every
experiment does (`Mask.save`: safetensors + a JSON summary with the config and the model
fingerprint) and a sparsity report beside it (`<mask>.sparsity.json`). `--scores-out` keeps both
score sets (score_cache's format) plus a manifest, so `select` picks a mask at any other p/q
without the model and without re-scoring: the same selection code on the same numbers, so the
same mask as pruning at that q directly.

`apply` zeroes the mask's weights in the model and saves it with `save_pretrained` (weights and
tokenizer), so vLLM, lm-evaluation-harness or transformers load it as any other model; the folder
also holds `harmprune_mask.json` naming the mask, its digest and config. A mask made for another
model is refused (`Mask.check_model`) before anything is written.

Failures are `ToolError`s with one-line messages that say what to fix, raised before the
expensive step where possible (bad data and p/q before the model loads); outputs are written
atomically (folders staged beside their destination, then renamed), so an error leaves no half.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from .models import LoadedModel, load_model, resolve_preset
from .paths import atomic_write_json
from .progress import report
from .mask import Mask, model_layout
from .pruning import PruneConfig, btap_scores, select_btap
from .score_cache import load_scores, save_scores
from .user_data import ToolError, UserDataError, check_tokenizes, data_summary, read_examples

SCORES_FORMAT = "harmprune-scores"
SCORES_VERSION = 1
SCORES_MANIFEST = "scores.json"
SCORE_FILES = {"harmful": "harmful.safetensors", "benign": "benign.safetensors"}
#: The record `apply` leaves in a pruned model folder.
APPLIED_RECORD = "harmprune_mask.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class PruneOutput:
    """What `prune` and `select` wrote (paths) and the mask and sparsity report they made."""

    mask: Mask
    mask_path: Path
    report: dict[str, Any]
    report_path: Path
    scores_path: Path | None = None


# ----------------------------------------------------------------------------------------------
# prune
# ----------------------------------------------------------------------------------------------
def prune_config(model: str, *, p: float | None = None, q: float | None = None, **fields: Any) -> PruneConfig:
    """The paper's `PruneConfig` with the model preset's p/q (a preset name, its hub id or its
    folder) unless given; other fields (scope, fmt, score, ...) as given. Validates p and q
    without loading anything."""
    preset = resolve_preset(model)
    return PruneConfig(p=preset.p if p is None else p, q=preset.q if q is None else q, **fields)


def prune(model: str, harmful: str | Path, benign: str | Path, out: str | Path, *,
          p: float | None = None, q: float | None = None, scope: str = "per_matrix", fmt: str = "raw",
          score: str = "signed", method: str = "btap", skip_response_tokens: int = 0,
          batch_size: int | None = None, device: str | None = None, dtype: str | None = None,
          scores_out: str | Path | None = None, progress: bool = True) -> PruneOutput:
    """B-TAP on the user's files: read and check them, load the model, score both sides once,
    select the mask, then write it (and `scores_out`, if given). Every check that needs no model
    (p/q, the files, the output paths) runs before the model is loaded."""
    config = prune_config(model, p=p, q=q, scope=scope, fmt=fmt, score=score, method=method,
                          skip_response_tokens=skip_response_tokens)
    harmful_ex = read_examples(harmful, "harmful")
    benign_ex = read_examples(benign, "benign")
    mask_path = _mask_path(out)
    scores_path = Path(scores_out) if scores_out is not None else None
    if scores_path is not None:
        _check_replaceable_scores(scores_path)

    loaded = load(model, device=device, dtype=dtype, progress=progress)
    tok = loaded.tokenizer
    check_tokenizes(tok, harmful_ex, "prune", config.fmt, config.skip_response_tokens)
    check_tokenizes(tok, benign_ex, "preserve", config.fmt, 0)
    batch_size = batch_size or loaded.preset.score_batch_size
    if batch_size < 1:
        raise ToolError(f"--batch-size must be >= 1, got {batch_size}")

    report(f"scoring {len(harmful_ex)} harmful and {len(benign_ex)} benign examples on {loaded.name}",
           enabled=progress)
    harm, ben = btap_scores(loaded.model, tok, harmful_ex, benign_ex, config, batch_size=batch_size,
                            progress=progress)
    meta = {"model_class": type(loaded.model).__name__, "model": loaded.name,
            "data": {"harmful": data_summary(harmful_ex), "benign": data_summary(benign_ex)}}
    mask = select_btap(harm, ben, config, meta=meta)
    layout = model_layout(loaded.model)
    sparsity = mask.sparsity_report(loaded.model)

    with _all_or_nothing() as written:
        if scores_path is not None:
            manifest = {"format": SCORES_FORMAT, "version": SCORES_VERSION, "fingerprint": harm.fingerprint,
                        "model": loaded.name, "config": config.to_dict(), "batch_size": batch_size,
                        "mask_meta": meta, "layout": layout, "files": SCORE_FILES}
            with _staged_dir(scores_path, replace=True) as tmp:
                save_scores(tmp / SCORE_FILES["harmful"], harm)
                save_scores(tmp / SCORE_FILES["benign"], ben)
                atomic_write_json(tmp / SCORES_MANIFEST, manifest)
            written.append(scores_path)
        mask_path, report_path = _save_mask(mask, mask_path, sparsity, written)
    return PruneOutput(mask, mask_path, sparsity, report_path, scores_path)


# ----------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------
def select(scores: str | Path, out: str | Path, *, q: float, p: float | None = None,
           scope: str | None = None, method: str | None = None) -> PruneOutput:
    """A mask at another q (and p, scope, method) from scores `prune --scores-out` kept: no model,
    no scoring pass. p defaults to the p the scores were saved with."""
    folder = Path(scores)
    manifest = read_scores_manifest(folder)
    base = PruneConfig.from_dict(manifest["config"])
    config = replace(base, q=q, p=base.p if p is None else p, scope=scope or base.scope,
                     method=method or base.method)
    mask_path = _mask_path(out)
    harm = load_scores(folder / manifest["files"]["harmful"])
    ben = load_scores(folder / manifest["files"]["benign"])
    if harm.fingerprint != manifest["fingerprint"] or ben.fingerprint != manifest["fingerprint"]:
        raise ToolError(f"{folder}: the score files do not match its {SCORES_MANIFEST} (another model's scores "
                        "were copied in?); re-run prune with --scores-out")
    meta = dict(manifest.get("mask_meta") or {})
    meta["scores"] = str(folder)
    mask = select_btap(harm, ben, config, meta=meta)
    sparsity = mask.layout_report(manifest["layout"])
    with _all_or_nothing() as written:
        mask_path, report_path = _save_mask(mask, mask_path, sparsity, written)
    return PruneOutput(mask, mask_path, sparsity, report_path, folder)


def read_scores_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a scores folder written by `prune --scores-out`, checked."""
    path = folder / SCORES_MANIFEST
    if not path.is_file():
        raise ToolError(f"{folder}: not a scores folder (no {SCORES_MANIFEST}); make one with "
                        "`python -m replication prune ... --scores-out FOLDER`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ToolError(f"{path}: unreadable ({err}); re-run prune with --scores-out") from None
    if manifest.get("format") != SCORES_FORMAT:
        raise ToolError(f"{path}: not a harmprune scores manifest; make one with prune --scores-out")
    if int(manifest.get("version", 0)) > SCORES_VERSION:
        raise ToolError(f"{path}: scores format version {manifest['version']} is newer than this code "
                        f"({SCORES_VERSION}); update the package")
    for name in manifest["files"].values():
        if not (folder / name).is_file():
            raise ToolError(f"{folder}: {name} is missing; re-run prune with --scores-out")
    return manifest


# ----------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------
def apply(model: str, mask: str | Path, out: str | Path, *, device: str = "cpu", dtype: str | None = "auto",
          force: bool = False, progress: bool = True) -> Path:
    """Write the pruned model as a `save_pretrained` folder at `out` (weights in the model's own
    dtype by default, tokenizer, and `harmprune_mask.json`). Refuses a mask made for another
    model, and an existing `out` unless `force` (then it is replaced whole, never merged)."""
    m = Mask.load(mask)
    mask_file = Path(mask) if Path(mask).is_file() else Path(f"{mask}.safetensors")   # as Mask.load finds it
    out = Path(out)
    if out.exists() and not force:
        raise ToolError(f"{out} already exists; choose another --out or pass --force to replace it")
    loaded = load(model, device=device, dtype=dtype, progress=progress)
    try:
        m.check_model(loaded.model)
    except ValueError as err:   # MaskMismatchError: the reason, one line
        raise ToolError(f"refusing to apply {mask_file} to {loaded.name}: {str(err).splitlines()[0]}") from None
    report(f"zeroing {m.count()} weights and writing {out}", enabled=progress)
    m.apply(loaded.model)
    sparsity = m.sparsity_report(loaded.model)
    record = {
        "format": "harmprune-pruned-model",
        "source_model": loaded.name,
        "mask": str(mask_file.resolve()),
        "mask_digest": m.digest(),
        "mask_file_sha256": _file_sha256(mask_file),
        "fingerprint": m.fingerprint,
        "count": m.count(),
        "fraction_of_all_params": sparsity["fraction_of_all_params"],
        "method": m.meta.get("method"),
        "config": m.meta.get("config"),
    }
    tokenizer = _pristine_tokenizer(loaded)
    try:
        with _staged_dir(out, replace=force) as tmp, _hf_progress(progress):
            loaded.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            # a plain write: the staged folder as a whole is what appears atomically
            (tmp / APPLIED_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as err:
        raise ToolError(f"could not write {out}: {err}") from None
    return out


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------
def load(name: str, *, device: str | None = None, dtype: str | None = None, progress: bool = True) -> LoadedModel:
    """`models.load_model` with a one-line `ToolError` for a model that does not load, whatever
    the cause. `device` None or "auto": `device.plan` (CUDA when present, else CPU). `dtype`: one of `DTYPES` or None (the
    loader's default: float32 on CPU, bfloat16 on GPU); "auto" keeps a folder's own dtype."""
    import torch

    from .models import UnknownModelError
    from .scoring import find_decoder_layers

    if dtype is not None and dtype not in DTYPES:
        raise ToolError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    from .device import DeviceError, resolve_device
    try:
        shown = resolve_device(device or "auto")
    except DeviceError as err:
        raise ToolError(str(err)) from None
    device = device or "auto"
    preset = resolve_preset(name)
    if dtype == "auto":
        torch_dtype: Any = "auto" if preset.source == "hub" else None
    else:
        torch_dtype = getattr(torch, dtype) if dtype else None
    report(f"loading {name} on {shown}", enabled=progress)
    try:
        with _hf_progress(progress):
            loaded = load_model(name, device=device, dtype=torch_dtype)
    except UnknownModelError:
        raise
    except Exception as err:  # a broken folder fails in many ways (config, weights, tokenizer)
        detail = str(err).splitlines()[0] if str(err) else ""
        raise ToolError(f"could not load model {name!r} ({type(err).__name__}: {detail}); pass a preset name, "
                        "a hub id or a folder written by save_pretrained (config.json, weights and tokenizer)") from None
    try:
        find_decoder_layers(loaded.model)
    except ValueError as err:
        raise ToolError(f"{name}: {err}") from None
    return loaded


def format_report(out: PruneOutput) -> str:
    """The sparsity report in a few lines for the terminal (the JSON beside the mask has it all)."""
    r = out.report
    lines = [f"pruned {r['count']} weights: {r['fraction_of_all_params']:.3g} of all {r['all_params']:,} parameters, "
             f"{r['fraction_of_decoder_linear_weights']:.3g} of decoder linear weights, in "
             f"{r['matrices_with_pruned_weights']}/{r['matrices']} matrices"]
    lines.append("  by module type: " + ", ".join(f"{k} {v['count']}" for k, v in r["by_module_type"].items()))
    lines.append("  by layer:       " + ", ".join(f"{k}: {v['count']}" for k, v in r["by_layer"].items()))
    lines.append(f"mask: {out.mask_path} (summary {out.mask_path.with_suffix('.json').name}, "
                 f"sparsity report {out.report_path.name})")
    if out.scores_path is not None:
        lines.append(f"scores: {out.scores_path}")
    return "\n".join(lines)


def _mask_path(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if path.is_dir():
        raise ToolError(f"{path} is a folder; --out names the mask file, e.g. {path / 'mask.safetensors'}")
    return path


def _report_path(mask_path: Path) -> Path:
    return mask_path.with_suffix(".sparsity.json")


def _save_mask(mask: Mask, path: Path, sparsity: dict[str, Any], written: list[Path]) -> tuple[Path, Path]:
    report_path = _report_path(path)
    atomic_write_json(report_path, sparsity)
    written.append(report_path)
    written += [path, path.with_suffix(".json")]
    return mask.save(path), report_path


def _check_replaceable_scores(path: Path) -> None:
    if path.exists() and not (path.is_dir() and (path / SCORES_MANIFEST).is_file()):
        raise ToolError(f"{path} exists and is not a scores folder; choose another --scores-out")


@contextmanager
def _all_or_nothing() -> Iterator[list[Path]]:
    """Outputs appended to the yielded list are removed again if the block fails, so a failed
    command leaves none of this run's files behind."""
    written: list[Path] = []
    try:
        yield written
    except OSError as err:
        _remove(written)
        raise ToolError(f"could not write the output: {err}") from None
    except BaseException:
        _remove(written)
        raise


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def _staged_dir(dest: Path, *, replace: bool) -> Iterator[Path]:
    """A temporary folder beside `dest` that becomes `dest` by one rename when the block succeeds
    (removed if it fails). With `replace`, an existing `dest` is swapped out and then deleted."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if dest.exists():
            if not replace:
                raise ToolError(f"{dest} already exists; choose another path or replace it")
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def _hf_progress(enabled: bool) -> Iterator[None]:
    """transformers' own bars (loading weights, writing shards) follow `--no-progress` too."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    if not enabled and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()


def _pristine_tokenizer(loaded: LoadedModel) -> Any:
    """The tokenizer as the model's folder has it: `load_model` sets a missing pad token to EOS
    for batching, which a saved copy should not inherit; reload it from the source when it is a
    hub id or folder."""
    if loaded.preset.source == "hub" and loaded.preset.hub_id:
        from transformers import AutoTokenizer
        try:
            return AutoTokenizer.from_pretrained(loaded.preset.hub_id)
        except Exception:   # the loaded one is still right, only with a pad token set
            return loaded.tokenizer
    return loaded.tokenizer


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["prune", "select", "apply", "load", "prune_config", "format_report", "read_scores_manifest",
           "PruneOutput", "ToolError", "UserDataError", "SCORES_FORMAT", "APPLIED_RECORD"]
