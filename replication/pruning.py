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

The selection returns a `mask.Mask` (per-module flat index sets, the fingerprint and a weight probe
of the model it was made for, and the settings that made it; saved, applied and restored exactly),
re-exported here so that `from replication.pruning import Mask, applied` keeps working.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .data import Example
from .mask import AppliedMask, Mask, MaskMismatchError, short_meta, applied, model_layout
from .scoring import FORMATS, Scores, compute_scores, find_decoder_layers, tokenize_examples

SCOPES = ("per_matrix", "global")
PRUNE_SCORES = ("signed", "abs")
PRESERVE_SCORES = ("abs", "signed", "wanda")
TIE_RULE = "score descending, then flat index ascending (global scope: index in the model-order concatenation)"


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
# Selection
# ----------------------------------------------------------------------------------------------
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
    meta = {"method": "intersection", "of": [short_meta(m.meta) for m in masks],
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
