"""B-TAP pruning: the set difference of harmful and benign importance scores, as weight masks.

    from replication.pruning import PruneConfig, prune_btap, applied
    mask = prune_btap(model, tok, harmful, benign, PruneConfig(p=5e-4, q=1e-4), batch_size=8)
    print(mask.sparsity_report(model))          # realised count and fraction, never just q
    with applied(model, mask):                  # zeroed inside, restored bit for bit after
        ...
    mask.save("results/organism/btap.safetensors"); Mask.load(...)

The rule (paper.md section 3.3, the authors' `prune_attribution_score_set_difference`), per
decoder `nn.Linear` weight matrix of N = rows * cols entries, ranked over its flattened entries:

    Q = top int(q * N) of -S_h      (S_h = signed harmful score; `neg_prune`)
    P = top int(p * N) of  S_b      (S_b = absolute benign score)
    prune Q \\ P  (set to zero)

**Tie rule** (the authors leave ties to `torch.topk`): entries are ranked by score, highest
first, and equal scores by flat index, lowest first; the top k are the first k in that order.
With `scope="global"` the same rule runs over all selected matrices at once, the flat index being
the position in the concatenation of the matrices in model order.

Variants, each a named option (peft-style registries below, not an if/else chain):
`method="next_q"` (prune top-2q minus top-q minus P), `intersection_of(masks)`,
`snip_rowwise(scores, sparsity)` (plain SNIP, per row) and `wei_set_difference` (Wei et al.'s
refusal ablation: absolute scores on both sides, not negated, p = q = 0.01, prune data = refusals).

A `Mask` holds per-module flat index sets, the fingerprint (and a weight probe) of the model it
was made for, and the settings that made it. It saves as one small safetensors file (metadata in
its header, plus a readable `.json` beside it), applies in place keeping the original values, and
restores them exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .data import Example
from .paths import atomic_write_json, shared_mode
from .scoring import (
    FORMATS,
    Scores,
    compute_scores,
    decoder_linears,
    find_decoder_layers,
    layer_index,
    model_fingerprint,
    probe_agreement,
    tokenize_examples,
    weight_probe,
)

SCOPES = ("per_matrix", "global")
PRUNE_SCORES = ("signed", "abs")
PRESERVE_SCORES = ("abs", "signed", "wanda")
TIE_RULE = "score descending, then flat index ascending (global scope: index in the model-order concatenation)"
MASK_FORMAT = "harmprune-mask"
MASK_VERSION = 1
#: Share of probed, non-zero weight values that must match for a mask to accept a model.
PROBE_MIN_AGREEMENT = 0.9


class MaskMismatchError(ValueError):
    """A mask was applied to a model other than the one it was made for."""


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    """An int or float, not a bool (True is an int in Python, never a fraction here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class PruneConfig:
    """How B-TAP selects weights. Defaults are the paper's (Llama-3.1-8B-Instruct, AdvBench)."""

    p: float = 5e-5
    """Benign (preserve) top fraction per matrix, protected from pruning. In [0, 1); 0 protects none."""
    q: float = 1e-5
    """Harmful (prune) top fraction per matrix, the pruning candidates. In (0, 1)."""
    scope: str = "per_matrix"
    """"per_matrix" (paper: top-k within each weight matrix) or "global" (one top-k over all)."""
    score: str = "signed"
    """Harmful-side score: "signed" (B-TAP, `W*sum g`) or "abs" (Wei et al., `|W|*sum|g|`)."""
    skip_response_tokens: int = 0
    """Leave the first k response tokens out of the harmful loss (0 = paper)."""
    fmt: str = "raw"
    """"raw" (the authors' asymmetric pretrained format) or "chat" (the tokenizer's template)."""
    method: str = "btap"
    """A name in `METHODS`: "btap" (Q minus P) or "next_q" (top-2q minus top-q minus P)."""
    preserve_score: str = "abs"
    """Benign-side score: "abs" (paper), or "signed"/"wanda" as ablations."""
    neg_prune: bool | None = None
    """Rank -S_h (the most negative `W*g`). None: True for a signed score, False for abs."""
    layers: tuple[int, ...] | None = None
    """Restrict to these decoder layers (None: all)."""
    module_types: tuple[str, ...] | None = None
    """Restrict to these projection names, e.g. ("down_proj",) (None: all)."""

    def __post_init__(self) -> None:
        # p = 0 protects no benign weight (plain top-q SNIP, the p sweep's end point); q = 0 would prune nothing
        if not _is_number(self.p) or not 0.0 <= float(self.p) < 1.0:
            raise ValueError(f"p must be a fraction in [0, 1) (0 protects no benign weight; e.g. p=5e-5), got {self.p!r}")
        if not _is_number(self.q) or not 0.0 < float(self.q) < 1.0:
            raise ValueError(f"q must be a fraction strictly between 0 and 1 (e.g. q=1e-5), got {self.q!r}")
        _check_choice("scope", self.scope, SCOPES)
        _check_choice("score", self.score, PRUNE_SCORES)
        _check_choice("fmt", self.fmt, FORMATS)
        _check_choice("method", self.method, tuple(METHODS))
        _check_choice("preserve_score", self.preserve_score, PRESERVE_SCORES)
        if not isinstance(self.skip_response_tokens, int) or self.skip_response_tokens < 0:
            raise ValueError(f"skip_response_tokens must be an int >= 0, got {self.skip_response_tokens!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if self.module_types is not None:
            object.__setattr__(self, "module_types", tuple(str(m) for m in self.module_types))

    @property
    def negate(self) -> bool:
        """Whether the harmful score is negated before ranking (`neg_prune`)."""
        return self.score == "signed" if self.neg_prune is None else bool(self.neg_prune)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("layers", "module_types"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruneConfig":
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown PruneConfig keys {unknown}; valid keys are {valid}")
        return cls(**d)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# The mask
# ----------------------------------------------------------------------------------------------
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
                f"made for (mask meta: {_short_meta(self.meta)}) or recompute the mask on this model")
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
        meta = {"method": "random", "seed": seed, "like": _short_meta(mask.meta), "like_digest": mask.digest()}
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


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------
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


def _short_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("method", "p", "q", "scope", "score", "model") if k in meta}


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: scores contain NaN or inf (did the model overflow in float16?); load the "
                         "model in float32 or bfloat16 and recompute the scores")


def top_k_flat(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted flat indices of the top `k` entries of `x` under the tie rule: higher score first,
    equal scores lower flat index first. O(N) through one `topk` for the threshold."""
    x = x.reshape(-1)
    n = x.numel()
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if k >= n:
        return torch.arange(n)
    thr = torch.topk(x, k, sorted=False).values.min()
    above = torch.nonzero(x > thr).reshape(-1)
    ties = torch.nonzero(x == thr).reshape(-1)[: k - above.numel()]
    return torch.cat([above, ties]).sort().values.cpu()


def top_sets(scores: Mapping[str, torch.Tensor], fraction: float, scope: str = "per_matrix",
             *, negate: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Top `int(fraction * N)` entries of each matrix (`per_matrix`, N = its size) or of all
    matrices together (`global`, N = their total size), under the tie rule.
    Returns `(indices per module, k per module)`; in global scope k is what each matrix got."""
    _check_choice("scope", scope, SCOPES)
    sign = -1.0 if negate else 1.0
    names = list(scores)
    if scope == "per_matrix":
        out, ks = {}, {}
        for name in names:
            x = scores[name].reshape(-1)
            _check_finite(name, x)
            k = int(fraction * x.numel())
            out[name] = top_k_flat(x * sign if negate else x, k)
            ks[name] = k
        return out, ks
    total = sum(scores[n].numel() for n in names)
    k = int(fraction * total)
    vals, pos, owner = [], [], []
    offset = 0
    for j, name in enumerate(names):
        x = scores[name].reshape(-1)
        _check_finite(name, x)
        x = x * sign if negate else x
        # The global top-k restricted to one matrix is a prefix of that matrix's own ranking,
        # so each matrix's own top-k holds every candidate it can contribute.
        idx = top_k_flat(x, min(k, x.numel()))
        vals.append(x[idx.to(x.device)].float().cpu())
        pos.append(idx + offset)
        owner.append(torch.full((idx.numel(),), j, dtype=torch.long))
        offset += x.numel()
    v, p, o = torch.cat(vals), torch.cat(pos), torch.cat(owner)
    order = torch.sort(p).indices                       # index ascending ...
    order = order[torch.sort(v[order], descending=True, stable=True).indices][:k]  # ... then score
    out, ks = {}, {}
    starts = {}
    offset = 0
    for name in names:
        starts[name] = offset
        offset += scores[name].numel()
    for j, name in enumerate(names):
        sel = p[order][o[order] == j] - starts[name]
        out[name] = sel.sort().values
        ks[name] = int(sel.numel())
    return out, ks


def _set_minus(a: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(a.numel(), dtype=torch.bool)
    for b in others:
        if b.numel():
            keep &= ~torch.isin(a, b, assume_unique=True)
    return a[keep]


def _check_pair(harm: Mapping[str, torch.Tensor], benign: Mapping[str, torch.Tensor]) -> None:
    if not harm:
        raise ValueError("harm_scores is empty: compute scores with replication.scoring.compute_scores first")
    missing = [k for k in harm if k not in benign]
    if missing:
        raise ValueError(f"benign scores lack modules the harmful scores have, e.g. {missing[:3]}: compute both "
                         "with the same `layers`/`module_types`")
    bad = [k for k in harm if tuple(harm[k].shape) != tuple(benign[k].shape)]
    if bad:
        raise ValueError(f"{bad[0]}: harmful and benign scores have different shapes; were they computed on "
                         "the same model?")
    fh, fb = getattr(harm, "fingerprint", None), getattr(benign, "fingerprint", None)
    if fh and fb and fh != fb:
        raise MaskMismatchError(f"harmful scores were computed on model {fh} and benign scores on model {fb}: "
                                "compute both on the same model")


def _btap_rule(q_sets, q_ks, p_sets, harm, scope, q, negate):
    return {k: _set_minus(q_sets[k], p_sets[k]) for k in q_sets}, {}


def _next_q_rule(q_sets, q_ks, p_sets, harm, scope, q, negate):
    q2_sets, q2_ks = top_sets(harm, 2 * q, scope, negate=negate)
    return ({k: _set_minus(q2_sets[k], q_sets[k], p_sets[k]) for k in q_sets},
            {"candidates_2q": sum(q2_ks.values())})


#: Selection rules by name: `(Q sets, their k, P sets, harm scores, scope, q, negate) ->
#: (pruned sets, extra meta)`. Register a new variant here and it becomes a `method=` option.
METHODS: dict[str, Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {
    "btap": _btap_rule,
    "next_q": _next_q_rule,
}


def select_weights(harm_scores: Mapping[str, torch.Tensor], benign_scores: Mapping[str, torch.Tensor],
                   p: float, q: float, scope: str = "per_matrix", *, method: str = "btap",
                   neg_prune: bool = True, meta: Mapping[str, Any] | None = None) -> Mask:
    """The B-TAP mask `Q \\ P` from two score dicts (see the module docstring for the rule and
    the tie rule). `neg_prune=True` ranks `-harm_scores` (signed B-TAP); False ranks them as
    they are (Wei et al.'s absolute scores). Warns once, with the count, when matrices round to
    zero candidates; the mask's `meta` always carries the realised count."""
    PruneConfig(p=p, q=q, scope=scope, method=method)  # validates p, q, scope, method
    _check_pair(harm_scores, benign_scores)
    names = list(harm_scores)
    harm = {k: harm_scores[k] for k in names}
    q_sets, q_ks = top_sets(harm, q, scope, negate=neg_prune)
    p_sets, p_ks = top_sets({k: benign_scores[k] for k in names}, p, scope)
    pruned, extra = METHODS[method](q_sets, q_ks, p_sets, harm, scope, q, neg_prune)

    zero_q = [k for k in names if q_ks[k] == 0]
    if scope == "per_matrix" and zero_q:
        smallest = min(harm[k].numel() for k in zero_q)
        warnings.warn(
            f"{len(zero_q)} of {len(names)} weight matrices round to zero pruning candidates "
            f"(int(q*N) = 0 with q={q:g}; the smallest has N={smallest}), so nothing is pruned there: "
            f"raise q (>= {1 / smallest:.2g} gives every matrix one candidate) or use scope='global'",
            stacklevel=2)
    elif sum(q_ks.values()) == 0:
        warnings.warn(f"q={q:g} gives zero pruning candidates over all {len(names)} matrices: raise q",
                      stacklevel=2)
    shapes = {k: tuple(harm[k].shape) for k in names}
    info = dict(method=method, p=p, q=q, scope=scope, neg_prune=neg_prune, tie_rule=TIE_RULE,
                candidates_q=sum(q_ks.values()), protected_p=sum(p_ks.values()),
                zero_candidate_matrices=len(zero_q) if scope == "per_matrix" else None,
                count=sum(int(v.numel()) for v in pruned.values()), **extra)
    for side, sc in (("harm_scores", harm_scores), ("benign_scores", benign_scores)):
        if getattr(sc, "meta", None):
            info[side] = dict(sc.meta)
    info.update(meta or {})
    return Mask(pruned, shapes, getattr(harm_scores, "fingerprint", None), info,
                probe=getattr(harm_scores, "probe", None))


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------
def next_q(harm_scores: Mapping[str, torch.Tensor], benign_scores: Mapping[str, torch.Tensor], p: float,
           q: float, scope: str = "per_matrix", *, neg_prune: bool = True) -> Mask:
    """The "next q" ablation (`--freeze_first_top_q`): prune top-2q minus top-q minus P, i.e. the
    q-sized band just below the paper's candidates (`select_weights(..., method="next_q")`)."""
    return select_weights(harm_scores, benign_scores, p, q, scope, method="next_q", neg_prune=neg_prune)


def matched_count_mask(prune_scores: Mapping[str, torch.Tensor], benign_scores: Mapping[str, torch.Tensor], p: float,
                       counts: Mapping[str, int], meta: Mapping[str, Any] | None = None) -> Mask:
    """In every matrix, the top `counts[m]` of -prune_scores outside the benign top-p: a B-TAP
    selection held to another mask's per-matrix counts (e.g. the control-task baseline, or one
    harm category's weights at another's budget), so that two masks differ only in which weights."""
    p_sets, _ = top_sets(benign_scores, p, "per_matrix")
    indices, shapes = {}, {}
    for name, s in prune_scores.items():
        k = int(counts.get(name, 0))
        shapes[name] = tuple(s.shape)
        protected = p_sets[name]
        cand = top_k_flat(-s.reshape(-1), min(s.numel(), k + protected.numel()))
        cand = cand[~torch.isin(cand, protected)]
        # top_k_flat returns sorted indices; re-rank the survivors by score to take the best k
        order = torch.sort(-s.reshape(-1)[cand], descending=True, stable=True).indices
        indices[name] = cand[order[:k]]
    return Mask(indices, shapes, getattr(prune_scores, "fingerprint", None), dict(meta or {}),
                probe=getattr(prune_scores, "probe", None))


@dataclass(frozen=True)
class Overlap:
    """Two index sets compared matrix by matrix: their sizes, their intersection, and the
    intersection a uniform random set of A's per-matrix sizes would have with B in expectation
    (|A_m| |B_m| / N_m summed): an overlap means nothing without that chance level."""

    a: int
    b: int
    intersection: int
    expected: float

    @property
    def inside(self) -> float:
        """Share of A inside B."""
        return self.intersection / self.a if self.a else float("nan")

    @property
    def inside_chance(self) -> float:
        return self.expected / self.a if self.a else float("nan")

    @property
    def recall(self) -> float:
        """Share of B inside A."""
        return self.intersection / self.b if self.b else float("nan")

    @property
    def jaccard(self) -> float:
        union = self.a + self.b - self.intersection
        return self.intersection / union if union else float("nan")

    @property
    def jaccard_chance(self) -> float:
        return self.expected / (self.a + self.b - self.expected) if self.a + self.b else float("nan")


def overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], numel: Mapping[str, int]) -> Overlap:
    """`Overlap` of per-matrix index sets `a` and `b` (matrix name -> flat indices; `numel`: each
    matrix's size, for the chance level). A matrix missing from one side holds nothing there."""
    inter = n_a = n_b = 0
    expected = 0.0
    empty = torch.zeros(0, dtype=torch.long)
    for name in set(a) | set(b):
        x, y = a.get(name, empty), b.get(name, empty)
        inter += int(torch.isin(x, y).sum())
        n_a, n_b = n_a + x.numel(), n_b + y.numel()
        expected += x.numel() * y.numel() / numel[name]
    return Overlap(n_a, n_b, inter, expected)


def jaccard(a: Mask, b: Mask) -> float:
    """|A & B| / |A | B| over (matrix, index) pairs; 0 when both are empty."""
    inter = union = 0
    for k in set(a.indices) | set(b.indices):
        x = a.indices.get(k, torch.zeros(0, dtype=torch.long))
        y = b.indices.get(k, torch.zeros(0, dtype=torch.long))
        i = int(torch.isin(x, y, assume_unique=True).sum())
        inter += i
        union += int(x.numel() + y.numel()) - i
    return inter / union if union else 0.0


def intersection_of(masks: Sequence[Mask]) -> Mask:
    """Weights that every mask prunes (the paper's overlap across harm categories). Every mask
    must come from the same model. Note: the authors' `find_intersection_indices` builds its
    per-category masks with *signed*, negated benign scores; ours intersects masks made however
    the caller chose (by default the paper's absolute benign score)."""
    masks = list(masks)
    if not masks:
        raise ValueError("intersection_of needs at least one mask")
    fps = {m.fingerprint for m in masks}
    if len(fps) > 1:
        raise MaskMismatchError(f"masks come from different models (fingerprints {sorted(map(str, fps))}): "
                                "intersect masks made on one model")
    names = list(dict.fromkeys(k for m in masks for k in m.indices))
    shapes, indices = {}, {}
    for k in names:
        shapes[k] = next(m.shapes[k] for m in masks if k in m.shapes)
        if any(m.shapes.get(k, shapes[k]) != shapes[k] for m in masks):
            raise MaskMismatchError(f"{k}: masks disagree on the weight shape")
        sets = [m.indices.get(k, torch.zeros(0, dtype=torch.long)) for m in masks]
        cur = sets[0]
        for s in sets[1:]:
            cur = cur[torch.isin(cur, s, assume_unique=True)]
        indices[k] = cur
    meta = {"method": "intersection", "of": [_short_meta(m.meta) for m in masks],
            "of_digests": [m.digest() for m in masks], "count": sum(int(v.numel()) for v in indices.values())}
    return Mask(indices, shapes, masks[0].fingerprint, meta, probe=masks[0].probe)


def snip_rowwise(scores: Mapping[str, torch.Tensor], sparsity: float, *, largest: bool = False) -> Mask:
    """Plain SNIP pruning (no set difference; the authors' `--prune_method attribution_score`):
    in every row of every matrix, prune the `int(cols * sparsity)` lowest-scored entries, or the
    highest with `largest=True` (their `--neg_prune`). Ties: lower column index first."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be strictly between 0 and 1, got {sparsity!r}")
    if not scores:
        raise ValueError("scores is empty: compute scores with replication.scoring.compute_scores first")
    indices, shapes = {}, {}
    for name, s in scores.items():
        _check_finite(name, s)
        if s.dim() != 2:
            raise ValueError(f"{name}: plain SNIP ranks within rows and needs 2-D scores, got shape {tuple(s.shape)}")
        rows, cols = s.shape
        k = int(cols * sparsity)
        x = (-s if largest else s).float()
        order = torch.sort(x, dim=-1, stable=True).indices[:, :k].cpu()
        indices[name] = (order + torch.arange(rows).unsqueeze(1) * cols).reshape(-1)
        shapes[name] = (rows, cols)
    count = sum(int(v.numel()) for v in indices.values())
    meta = {"method": "snip_rowwise", "sparsity": sparsity, "largest": largest, "count": count,
            "tie_rule": "per row: score ascending (descending with largest), then column ascending"}
    if getattr(scores, "meta", None):
        meta["scores"] = dict(scores.meta)
    return Mask(indices, shapes, getattr(scores, "fingerprint", None), meta, probe=getattr(scores, "probe", None))


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------
def btap_scores(model: nn.Module, tokenizer: Any, harmful_examples: Sequence[Example],
                benign_examples: Sequence[Example], config: PruneConfig | None = None, *,
                batch_size: int = 8, progress: bool = True) -> tuple[Scores, Scores]:
    """The two score sets B-TAP selects from, `(harmful, benign)`: the harmful set tokenised as
    prune data and scored with `config.score`, the benign set as preserve data with
    `config.preserve_score` (paper.md section 3.2); `skip_response_tokens` applies to the harmful
    loss only. Kept apart from the selection so that one scoring pass serves every p and q."""
    config = config or PruneConfig()
    harmful_examples, benign_examples = list(harmful_examples), list(benign_examples)
    find_decoder_layers(model)
    # Fail on bad data before any expensive pass.
    tokenize_examples(tokenizer, harmful_examples, "prune", config.fmt, config.skip_response_tokens)
    tokenize_examples(tokenizer, benign_examples, "preserve", config.fmt, 0)
    common = dict(fmt=config.fmt, batch_size=batch_size, layers=config.layers,
                  module_types=config.module_types, progress=progress)
    harm = compute_scores(model, tokenizer, harmful_examples, score=config.score, role="prune",
                          skip_response_tokens=config.skip_response_tokens, **common)
    benign = compute_scores(model, tokenizer, benign_examples, score=config.preserve_score, role="preserve",
                            **common)
    return harm, benign


def select_btap(harm_scores: Mapping[str, torch.Tensor], benign_scores: Mapping[str, torch.Tensor],
                config: PruneConfig, *, meta: Mapping[str, Any] | None = None) -> Mask:
    """`select_weights` with a `PruneConfig`'s selection fields (p, q, scope, method, negation);
    the mask's meta carries the whole config, so it says how to remake it."""
    return select_weights(harm_scores, benign_scores, config.p, config.q, config.scope, method=config.method,
                          neg_prune=config.negate, meta={"config": config.to_dict(), **(meta or {})})


def prune_btap(model: nn.Module, tokenizer: Any, harmful_examples: Sequence[Example],
               benign_examples: Sequence[Example], config: PruneConfig | None = None, *,
               batch_size: int = 8, progress: bool = True) -> Mask:
    """Score both calibration sets on `model` and select the weights to prune (the model is not
    changed: apply the returned mask): `btap_scores` then `select_btap`."""
    config = config or PruneConfig()
    harm, benign = btap_scores(model, tokenizer, harmful_examples, benign_examples, config,
                               batch_size=batch_size, progress=progress)
    return select_btap(harm, benign, config, meta={"model_class": type(model).__name__})


def wei_set_difference(model: nn.Module, tokenizer: Any, refusal_examples: Sequence[Example],
                       benign_examples: Sequence[Example], *, p: float = 0.01, q: float = 0.01,
                       fmt: str = "raw", scope: str = "per_matrix", batch_size: int = 8,
                       progress: bool = True) -> Mask:
    """Wei et al.'s set difference, used by the authors as a refusal-ablation attack: absolute
    SNIP on both sides, not negated, p = q = 0.01, prune data = the model's own refusals."""
    config = PruneConfig(p=p, q=q, scope=scope, score="abs", fmt=fmt, preserve_score="abs", neg_prune=False)
    mask = prune_btap(model, tokenizer, refusal_examples, benign_examples, config,
                      batch_size=batch_size, progress=progress)
    mask.meta["method"] = "wei_set_difference"
    return mask


__all__ = [
    "PruneConfig", "Mask", "AppliedMask", "MaskMismatchError", "applied", "select_weights", "top_sets",
    "top_k_flat", "next_q", "intersection_of", "matched_count_mask", "jaccard", "snip_rowwise", "prune_btap",
    "btap_scores", "select_btap", "model_layout",
    "wei_set_difference", "METHODS", "Overlap", "overlap",
    "SCOPES", "TIE_RULE",
]
