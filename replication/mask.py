"""The weight mask: which weights to zero, for which model, made how; applied and restored exactly.

A `Mask` holds per-module flat index sets into the decoder `nn.Linear` weights, the fingerprint (and
a weight probe) of the model it was made for, and the settings that made it (`meta`). It saves as
one small safetensors file (metadata in its header, plus a readable `.json` beside it), applies in
place keeping the original values, and restores them bit for bit. How a mask's weights are chosen
(B-TAP and its variants) is `pruning`'s business; this module only knows the format and the model
checks, so every consumer of masks (measurement, sweeps, the tool) depends on it alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .paths import atomic_write_json, shared_mode
from .scoring import decoder_linears, find_decoder_layers, layer_index, model_fingerprint, probe_agreement, weight_probe

MASK_FORMAT = "harmprune-mask"
MASK_VERSION = 1
#: Share of probed, non-zero weight values that must match for a mask to accept a model.
PROBE_MIN_AGREEMENT = 0.9


class MaskMismatchError(ValueError):
    """A mask was applied to a model other than the one it was made for."""


class Mask:
    """Weights to zero: for each decoder Linear (keyed by module path), the sorted flat indices
    into its weight. Carries the `fingerprint` (and `probe`) of the model it was made for and a
    JSON-able `meta` with the settings and counts that made it."""

    def __init__(self, indices: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]],
                 fingerprint: str | None, meta: Mapping[str, Any] | None = None,
                 probe: Mapping[str, torch.Tensor] | None = None):
        if set(indices) != set(shapes):
            raise ValueError("indices and shapes must have the same module names")
        self.indices: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(int(x) for x in shapes[k]) for k in shapes}
        for name, idx in indices.items():
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu()
            idx = torch.unique(idx)  # sorted, no duplicates
            n = _numel(self.shapes[name])
            if idx.numel() and (idx[0] < 0 or idx[-1] >= n):
                raise ValueError(f"{name}: indices out of range for a weight of shape {self.shapes[name]}")
            self.indices[name] = idx
        self.fingerprint = fingerprint
        self.meta: dict[str, Any] = dict(meta or {})
        self.probe: dict[str, torch.Tensor] | None = (
            {k: v.clone() for k, v in probe.items()} if probe is not None else None)
        self._originals: dict[int, dict[str, torch.Tensor]] = {}

    # -- counting ---------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of weights this mask zeroes."""
        return sum(int(v.numel()) for v in self.indices.values())

    def counts(self) -> dict[str, int]:
        return {k: int(v.numel()) for k, v in self.indices.items()}

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        nz = sum(1 for v in self.indices.values() if v.numel())
        return (f"Mask({self.count()} weights in {nz}/{len(self.indices)} matrices, "
                f"method={self.meta.get('method')!r}, fingerprint={self.fingerprint!r})")

    def equals(self, other: "Mask") -> bool:
        """Same modules and exactly the same indices."""
        return (set(self.indices) == set(other.indices)
                and all(torch.equal(self.indices[k], other.indices[k]) for k in self.indices))

    def realised_fraction(self, model: nn.Module) -> float:
        """Weights this mask zeroes as a fraction of *all* the model's parameters."""
        return self.count() / _total_params(model)

    def sparsity_report(self, model: nn.Module) -> dict[str, Any]:
        """Count and fraction of all parameters and of decoder linear weights that the mask zeroes,
        by module type and by layer, plus the zeros now present in the decoder linears (a
        `check_sparsity`-style measurement of the model as it is)."""
        self.check_model(model)
        zeros_now = sum(int((m.weight.detach() == 0).sum()) for m in decoder_linears(model).values()
                        if m.weight.device.type != "meta")
        return self.layout_report(model_layout(model), zeros_now=zeros_now)

    def layout_report(self, layout: Mapping[str, Any], *, zeros_now: int | None = None) -> dict[str, Any]:
        """`sparsity_report` from a `model_layout` alone (module shapes, parameter count), so that
        a mask selected from saved scores is reported without loading the model; the zeros now in
        the model (`zeros_now`) are then unknown (None)."""
        prefix, shapes, total = layout["prefix"], layout["shapes"], int(layout["all_params"])
        dl_total = sum(_numel(s) for s in shapes.values())
        by_type: dict[str, dict[str, float]] = {}
        by_layer: dict[str, dict[str, float]] = {}
        for name, shape in shapes.items():
            k = int(self.indices[name].numel()) if name in self.indices else 0
            n = _numel(shape)
            for table, key in ((by_type, name.rsplit(".", 1)[-1]), (by_layer, str(layer_index(name, prefix)))):
                row = table.setdefault(key, {"count": 0, "numel": 0})
                row["count"] += k
                row["numel"] += n
        for table in (by_type, by_layer):
            for row in table.values():
                row["fraction"] = row["count"] / row["numel"] if row["numel"] else 0.0
        n = self.count()
        return {
            "count": n,
            "fraction_of_all_params": n / total,
            "fraction_of_decoder_linear_weights": n / dl_total,
            "all_params": total,
            "decoder_linear_weights": dl_total,
            "matrices": len(self.indices),
            "matrices_with_pruned_weights": sum(1 for v in self.indices.values() if v.numel()),
            "zeros_now_in_decoder_linears": zeros_now,
            "by_module_type": by_type,
            "by_layer": by_layer,
        }

    # -- model checks -----------------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> dict[str, nn.Linear]:
        """The model's modules this mask addresses; `MaskMismatchError` if it was made for another
        model (fingerprint, module names, shapes, or the weight probe disagree)."""
        fp = model_fingerprint(model)
        if self.fingerprint is not None and fp != self.fingerprint:
            raise MaskMismatchError(
                f"this mask was made for a model with fingerprint {self.fingerprint}, but this model's is {fp} "
                f"(a different architecture, vocabulary or embedding/norm weights): load the model the mask was "
                f"made for (mask meta: {short_meta(self.meta)}) or recompute the mask on this model")
        linears = decoder_linears(model)
        missing = [k for k in self.indices if k not in linears]
        if missing:
            raise MaskMismatchError(f"this mask addresses modules the model does not have, e.g. {missing[:3]}: "
                                    "it was made for another model; recompute it on this one")
        bad = [k for k in self.indices if tuple(linears[k].weight.shape) != self.shapes[k]]
        if bad:
            k = bad[0]
            raise MaskMismatchError(f"{k}: the mask expects a weight of shape {self.shapes[k]}, the model has "
                                    f"{tuple(linears[k].weight.shape)}; recompute the mask on this model")
        if self.probe:
            match, compared = probe_agreement(self.probe, linears)
            if compared and match < PROBE_MIN_AGREEMENT * compared:
                raise MaskMismatchError(
                    f"this mask was made for a model with the same architecture and embeddings but different "
                    f"projection weights (only {match}/{compared} probed weight values agree): it belongs to "
                    "another fine-tune of the same base; load the model it was made for or recompute the mask")
        return {k: linears[k] for k in self.indices}

    # -- apply / restore -------------------------------------------------------------------------
    def apply(self, model: nn.Module) -> "AppliedMask":
        """Zero the masked weights in place, keeping their original values so that `restore`
        (or the returned handle's `.restore()`) puts them back bit for bit."""
        key = id(model)
        if key in self._originals:
            raise RuntimeError("this mask is already applied to this model: call mask.restore(model) first")
        modules = self.check_model(model)
        saved: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, mod in modules.items():
                idx = self.indices[name]
                if not idx.numel():
                    continue
                w = mod.weight
                if w.device.type == "meta":
                    raise RuntimeError(f"{name} is offloaded (meta device); load the model without disk offload "
                                       "to prune it")
                flat = w.data.view(-1)
                i = idx.to(flat.device)
                saved[name] = flat[i].clone()
                flat[i] = 0
        self._originals[key] = saved
        return AppliedMask(self, model)

    def restore(self, model: nn.Module) -> None:
        """Put back the values `apply` zeroed in this model, exactly."""
        saved = self._originals.pop(id(model), None)
        if saved is None:
            raise RuntimeError("this mask is not applied to this model (nothing to restore)")
        modules = decoder_linears(model)
        with torch.no_grad():
            for name, values in saved.items():
                flat = modules[name].weight.data.view(-1)
                flat[self.indices[name].to(flat.device)] = values.to(flat.device)

    def is_applied(self, model: nn.Module) -> bool:
        return id(model) in self._originals

    # -- save / load -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the mask atomically as `path` (safetensors: one int64 index tensor per module,
        settings in the header) and a readable summary `path` with suffix `.json` beside it."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"idx:{k}": v.contiguous() for k, v in self.indices.items()}
        for k, v in (self.probe or {}).items():
            tensors[f"probe:{k}"] = v.contiguous()
        header = {"format": MASK_FORMAT, "version": str(MASK_VERSION), "fingerprint": self.fingerprint or "",
                  "shapes": json.dumps(self.shapes), "meta": json.dumps(self.meta, default=str)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=header)
            shared_mode(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_json(path.with_suffix(".json"), {
            "format": MASK_FORMAT, "version": MASK_VERSION, "fingerprint": self.fingerprint,
            "count": self.count(), "counts": self.counts(), "meta": self.meta, "sha256": self.digest()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        from safetensors import safe_open

        path = Path(path)
        if not path.exists() and path.with_name(path.name + ".safetensors").exists():
            path = path.with_name(path.name + ".safetensors")
        if not path.exists():
            raise FileNotFoundError(f"no mask at {path}: save one with Mask.save(path)")
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if header.get("format") != MASK_FORMAT:
                raise ValueError(f"{path} is not a harmprune mask (no '{MASK_FORMAT}' header); "
                                 "was it written by Mask.save?")
            if int(header.get("version", 0)) > MASK_VERSION:
                raise ValueError(f"{path} is mask format version {header['version']}, newer than this code "
                                 f"({MASK_VERSION}): update the package")
            indices, probe = {}, {}
            for key in fh.keys():
                kind, name = key.split(":", 1)
                (indices if kind == "idx" else probe)[name] = fh.get_tensor(key)
        shapes = {k: tuple(v) for k, v in json.loads(header["shapes"]).items()}
        return cls(indices, shapes, header.get("fingerprint") or None, json.loads(header["meta"]),
                   probe=probe or None)

    def digest(self) -> str:
        """sha256 of the index sets: equal digests, equal masks."""
        h = hashlib.sha256()
        for k in sorted(self.indices):
            h.update(k.encode() + b"\0" + self.indices[k].numpy().tobytes())
        return h.hexdigest()[:16]

    # -- baselines --------------------------------------------------------------------------------
    @classmethod
    def random_like(cls, mask: "Mask", model: nn.Module, seed: int = 0) -> "Mask":
        """A random control: the same number of weights in the same matrices, drawn uniformly
        (without replacement) with a per-matrix generator seeded from `seed` and the module path."""
        modules = mask.check_model(model)
        indices = {}
        for name in mask.indices:
            k, n = int(mask.indices[name].numel()), _numel(mask.shapes[name])
            g = torch.Generator().manual_seed(_seed_for(seed, name))
            indices[name] = _sample_without_replacement(n, k, g)
        meta = {"method": "random", "seed": seed, "like": short_meta(mask.meta), "like_digest": mask.digest()}
        return cls(indices, mask.shapes, mask.fingerprint, meta,
                   probe=mask.probe if mask.probe is not None else weight_probe(modules))


class AppliedMask:
    """Handle returned by `Mask.apply`: `.restore()` undoes it (also usable as a context manager)."""

    def __init__(self, mask: Mask, model: nn.Module):
        self.mask, self.model = mask, model

    def restore(self) -> None:
        self.mask.restore(self.model)

    def __enter__(self) -> "AppliedMask":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mask.is_applied(self.model):
            self.restore()


@contextmanager
def applied(model: nn.Module, mask: Mask) -> Iterator[nn.Module]:
    """`with applied(model, mask): ...` runs the block on the pruned model and restores it after,
    even on error."""
    mask.apply(model)
    try:
        yield model
    finally:
        mask.restore(model)


def model_layout(model: nn.Module) -> dict[str, Any]:
    """What a sparsity report needs to know about a model, JSON-able: the decoder-layer path,
    every decoder Linear's weight shape (model order) and the total parameter count."""
    prefix, _ = find_decoder_layers(model)
    return {"prefix": prefix, "shapes": {k: list(m.weight.shape) for k, m in decoder_linears(model).items()},
            "all_params": _total_params(model)}


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _seed_for(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") & ((1 << 63) - 1)


def _sample_without_replacement(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if 4 * k >= n:
        return torch.randperm(n, generator=g)[:k].sort().values
    chosen = torch.zeros(0, dtype=torch.long)
    while chosen.numel() < k:  # rejection: draw, dedupe (keeping first draws), repeat
        draw = torch.randint(0, n, (2 * (k - chosen.numel()) + 8,), generator=g)
        merged = torch.cat([chosen, draw])
        uniq, inverse = torch.unique(merged, return_inverse=True)
        first = torch.full((uniq.numel(),), merged.numel(), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(merged.numel()), reduce="amin")
        chosen = merged[first.sort().values][:k]
    return chosen.sort().values


def short_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that tell one mask from another, for error messages and the meta of derived masks."""
    return {k: meta[k] for k in ("method", "p", "q", "scope", "score", "model") if k in meta}


__all__ = ["Mask", "AppliedMask", "MaskMismatchError", "applied", "model_layout", "MASK_FORMAT", "MASK_VERSION",
           "PROBE_MIN_AGREEMENT"]
