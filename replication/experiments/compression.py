"""Finding 3, alignment compression: does alignment concentrate harm onto fewer, more separable weights?

The paper (its revised text, as quoted in paper.md section 9) calls it *mechanistic compression*:
alignment concentrates harmful-response dependence onto "a smaller and more separable set of
parameters", emerging along the OLMo-3 checkpoint sequence mostly after preference optimisation.
Its exact metric is not public, so this module computes every reasonable reading, each with an
interval over prompts and >= 3 calibration seeds, for one pair (aligned model, its unaligned
counterpart) attacked the same way (10-token prefill; a base model in its own prompt format) on
the same held-out prompts with the same judge:

1. **harm cut at the same count**: at every swept q, B-TAP on the aligned model, and on the
   unaligned one the B-TAP selection held to the aligned mask's per-matrix counts
   (`Sweep.matched`), so the two differ only in which weights;
2. **fewest weights** for a 50% and an 80% harm cut, interpolated (log count) on that sweep;
3. **separability**: the share of the harmful top-q set (before the benign set is removed) that
   lies inside the benign top-p set, and their Jaccard, against the random expectation;
4. **utility cost at matched harm reduction**: the utility drop at each member's 50%-cut count,
   interpolated between the two swept q bracketing it;
5. **concentration**: the share of the harmful score mass (the positive part of the negated
   signed score) held by the top-k weights, as a curve over k.

Readings 3 and 5 need scores only, so they are also computed along the organism's **training-stage
series** (end of pretraining, base, 10/25/50/75% through alignment, aligned; `organism.stage_series`):
the organism's own version of the paper's OLMo-3 figure. Reading 2 along the series would need a
harm sweep per checkpoint and is not run (the pretrained checkpoint has no chat format to attack).

Verdict (per pair): reproduced if readings 2 and 3 both favour the aligned model beyond their
intervals; partly reproduced if one does; not reproduced otherwise; not measurable if either
member's unpruned harmfulness under prefilling is below the judge's floor.

Cost, organism full scale (one CPU thread): the aligned member's scores come from finding 1's
cache; 6 scoring runs of the base model and 30 along the series (~4 s each); 48 harm-only states
(~6 s each) and 12 utility states (~25 s each): about 12 minutes.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..device import placement_of
from ..scales import apply_overrides
from .. import stats
from ..measure import EvalConfig, Evaluator
from ..models import LoadedModel, load_model, resolve_preset
from ..mask import Mask
from ..pruning import overlap, top_sets
from ..results import write_result
from ..sweep import Sweep
from ..task_data import TaskData, task_data
from .compactness import (MIN_BASELINE_HARM, MIN_BASELINE_HARM_BY_JUDGE, CompactnessConfig, default_qs,
                          utility_metrics)

TARGETS = (0.5, 0.8)        # reading 2: the harm cuts whose weight counts are compared
UTILITY_AT = 0.5            # reading 4: utility cost at this harm cut
#: reading 5's curve: fractions of all decoder linear weights (top-k ranked over all matrices)
CONCENTRATION_FRACTIONS = tuple(float(x) for x in np.geomspace(1e-5, 1e-1, 9))
READINGS = {
    "cut_at_count": "1. harm cut at the same count of zeroed weights",
    "fewest_weights": "2. fewest weights for a 50% harm cut (80% beside it)",
    "separability": "3. separability: share of the harmful top-q set inside the benign top-p set",
    "utility_at_cut": "4. utility cost at a matched 50% harm cut",
    "concentration": "5. concentration: harmful score mass in the top-q fraction of weights",
}


@dataclass
class CompressionConfig:
    model: str = "organism-aligned"         # either member: the pair is (aligned, its counterpart)
    counterpart: str | None = None          # None: the preset's counterpart
    scale: str = "full"                    # smoke | full | paper (`scales.py`)
    device: str = "auto"                   # `device.py`: CUDA when present, else CPU
    p: float | None = None                  # None: the aligned preset's p
    q: float | None = None                  # readings 1, 3, 5 at the swept q nearest this (None: the preset's q)
    qs: list[float] | None = None           # the sweep (None: finding 1's)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    series: bool = True                     # organism only: readings 3 and 5 along the training stages
    # sizes of the data and evaluation: finding 1's for the scale (so its cached scores are reused)
    n_calibration: int | None = None
    n_eval: int | None = None
    n_eval_benign: int | None = None
    max_new_tokens: int | None = None
    judge: str = "auto"                     # real models
    score_batch_size: int | None = None

    @classmethod
    def for_scale(cls, model: str, scale: str, **overrides) -> "CompressionConfig":
        base = cls(model=model, scale=scale)
        if scale == "smoke":
            base.seeds = [0, 1]
        apply_overrides(base, overrides)
        return base

    def compactness(self, model: str) -> CompactnessConfig:
        """Finding 1's config for one member: the same data sizes and calibration samples."""
        return CompactnessConfig.for_scale(model, self.scale, device=self.device, qs=self.qs, seeds=self.seeds, n_calibration=self.n_calibration,
                                           n_eval=self.n_eval, n_eval_benign=self.n_eval_benign,
                                           max_new_tokens=self.max_new_tokens, judge=self.judge)


#: the finding's config (the runner routes `-p field=value` for any of its fields into the notebook's `config`)
CONFIG = CompressionConfig


def pair_of(model: str, counterpart: str | None = None) -> tuple[str, str]:
    """(aligned, unaligned) names of the pair `model` belongs to; a clear error when it has none."""
    preset = resolve_preset(model)
    other = counterpart or preset.counterpart
    if other is None:
        raise ValueError(f"{model} has no unaligned/aligned counterpart preset: pass counterpart=NAME "
                         "(e.g. its base model's hub id)")
    return (model, other) if preset.aligned else (other, model)


def pair_name(aligned: str, unaligned: str) -> str:
    return f"{aligned} vs {unaligned}"


def results_folder(model: str, counterpart: str | None = None) -> str:
    """Where the pair's run is filed: `results/<aligned>_vs_<unaligned>/` (either member names it); a
    model with no known counterpart keeps its own folder (the run then fails with what to pass)."""
    from ..paths import safe_name
    try:
        return safe_name(pair_name(*pair_of(model, counterpart)))
    except (ValueError, KeyError):
        return model


# ----------------------------------------------------------------------------------------------
# score-only readings (pure functions of score tensors: tested on hand-built ones)
# ----------------------------------------------------------------------------------------------
def separability(prune: Mapping[str, torch.Tensor], preserve: Mapping[str, torch.Tensor], p: float,
                 q: float) -> dict[str, float]:
    """How much of the harmful top-q set Q (per matrix, ranked by the negated signed score, before
    the benign set is removed) lies inside the benign top-p set P: `inside` = |Q & P| / |Q|, the
    Jaccard |Q & P| / |Q | P|, and each one's value for a Q drawn at random in every matrix
    (|Q_m| |P_m| / N_m expected in common). Lower = more separable."""
    q_sets, _ = top_sets(prune, q, "per_matrix", negate=True)
    p_sets, _ = top_sets(preserve, p, "per_matrix")
    o = overlap(q_sets, p_sets, {k: v.numel() for k, v in prune.items()})
    return {"inside": o.inside, "inside_random": o.inside_chance, "jaccard": o.jaccard,
            "jaccard_random": o.jaccard_chance, "q_size": o.a, "p_size": o.b}


def curve_and_at(prune: Mapping[str, torch.Tensor], q: float) -> tuple[list[float], float]:
    """Reading 5's curve and its value at `q`, from one ranking of the scores."""
    values = concentration(prune, list(CONCENTRATION_FRACTIONS) + [q])
    return values[:-1], values[-1]


def concentration(prune: Mapping[str, torch.Tensor], fractions: Sequence[float] = CONCENTRATION_FRACTIONS) -> list[float]:
    """Share of the harmful score mass held by the top `fraction` of weights (ranked over all
    matrices together). The mass is the positive part of the negated signed score: a weight counts
    as much as zeroing it is estimated to raise the harmful loss; weights whose removal would lower
    it hold none."""
    h = torch.cat([torch.clamp(-s.reshape(-1).float(), min=0) for s in prune.values()])
    total = float(h.sum())
    if total <= 0:
        return [float("nan")] * len(fractions)
    n = h.numel()
    ks = [max(1, min(n, int(round(f * n)))) for f in fractions]
    top = torch.topk(h, max(ks)).values
    csum = torch.cumsum(top.double(), 0)
    return [float(csum[k - 1]) / total for k in ks]


def crossing(counts: Sequence[float], cuts: np.ndarray, target: float, beyond: float) -> np.ndarray:
    """The weight count where a harm-cut curve first reaches `target`, interpolated linearly in
    log count between the swept points around it. `cuts` is (..., n_q) over increasing `counts`;
    a curve at the target already at the smallest count gives that count, one that never reaches
    it gives `beyond` (a sentinel past the sweep, so intervals stay defined)."""
    counts = np.asarray(counts, dtype=float)
    cuts = np.asarray(cuts, dtype=float)
    reached = cuts >= target
    first = np.where(reached.any(-1), reached.argmax(-1), -1)
    logc = np.log(counts)
    out = np.full(first.shape, float(beyond))
    at0 = first == 0
    out[at0] = counts[0]
    mid = first > 0
    if mid.any():
        i = first[mid]
        c = cuts[mid] if cuts.ndim > 1 else np.broadcast_to(cuts, (int(mid.sum()), len(counts)))
        rows = np.arange(len(i))
        c0, c1 = c[rows, i - 1], c[rows, i]
        w = np.where(c1 > c0, (target - c0) / np.where(c1 > c0, c1 - c0, 1.0), 1.0)
        out[mid] = np.exp(logc[i - 1] + np.clip(w, 0, 1) * (logc[i] - logc[i - 1]))
    return out if out.ndim else float(out)


def favours(ci: Mapping[str, float] | None, neutral: float = 0.0) -> str:
    """Which member an interval of (aligned advantage) favours: above `neutral` the aligned model,
    below it the unaligned one, straddling: undecided."""
    if ci is None or ci.get("lo") is None or not np.isfinite(ci["lo"]) or not np.isfinite(ci["hi"]):
        return "not measured"
    if ci["lo"] > neutral:
        return "aligned"
    if ci["hi"] < neutral:
        return "unaligned"
    return "undecided"


def _iv(x: stats.Interval) -> dict[str, float]:
    return {"value": x.value, "lo": x.lo, "hi": x.hi, "n_prompts": x.n_prompts, "n_seeds": x.n_seeds}


def _seed_grid(values: Sequence[float]) -> np.ndarray:
    """Per-seed scalars as a seeds x 1 grid: the bootstrap then resamples seeds only."""
    return np.asarray(values, dtype=float).reshape(-1, 1)


# ----------------------------------------------------------------------------------------------
# one member
# ----------------------------------------------------------------------------------------------
class Member:
    """One model of the pair with its data, evaluator, sweep and per-seed scores."""

    def __init__(self, name: str, cfg: CompressionConfig, *, loaded: LoadedModel | None = None,
                 data: TaskData | None = None, progress: bool = True):
        self.cc = cfg.compactness(name)
        self.loaded = loaded or load_model(name, scale=cfg.scale, device=cfg.device)
        self.name = name
        self.data = data or task_data(self.loaded, cfg.scale, self.cc.sizes(), self.cc.real_data(), progress=progress)
        real = self.loaded.preset.source != "organism"
        self.ev = Evaluator(self.loaded, self.data, EvalConfig(max_new_tokens=self.cc.max_new_tokens,
                                                               n_generate=self.cc.n_generate,
                                                               batch_size=self.cc.eval_batch_size if real else None))
        self.sweep = Sweep(self.loaded, self.ev, score_batch_size=cfg.score_batch_size)
        self._scores: dict[int, tuple] = {}

    def scores(self, seed: int):
        if seed not in self._scores:
            sample = TaskData.sample
            self._scores[seed] = self.sweep.btap_scores(sample(self.data.harmful_pool, self.cc.n_calibration, seed),
                                                        sample(self.data.benign_pool, self.cc.n_calibration, seed))
        return self._scores[seed]


def series_checkpoints(cfg: CompressionConfig, aligned: LoadedModel, progress: bool = True) -> list[tuple[str, float | None, Any]]:
    """The training-stage series of the aligned member, in order, as (label, position, where): the
    organism's kept checkpoints (position = fraction of alignment done; None before instruction
    tuning) or a hub series of presets (`models.STAGE_SERIES`, position = index). Empty if none."""
    from ..models import STAGE_SERIES
    if aligned.preset.source == "organism":
        from ..organism import OrganismConfig, stage_series
        config = OrganismConfig.smoke() if cfg.scale == "smoke" else OrganismConfig.full()
        return list(stage_series(config, progress=progress))
    names = STAGE_SERIES.get(aligned.name, ())
    return [(n, float(i), n) for i, n in enumerate(names)]


def _load_checkpoint(where: Any, aligned: LoadedModel, scale: str, device: str = "auto"):
    """(model, tokenizer) of one series checkpoint: a saved folder, or a preset name."""
    from pathlib import Path
    if isinstance(where, Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32).to(aligned.model.device).eval()
        return model, AutoTokenizer.from_pretrained(where)
    if where == aligned.name:
        return aligned.model, aligned.tokenizer
    loaded = load_model(where, scale=scale, device=device)
    return loaded.model, loaded.tokenizer


def _series_readings(cfg: CompressionConfig, aligned: LoadedModel, data: TaskData, p: float, q: float,
                     batch_size: int, progress: bool) -> list[dict[str, Any]]:
    """Readings 3 and 5 at every checkpoint of the training-stage series, on the pair's calibration
    samples (scores through the disk cache: the base and aligned ones come from the pair's runs)."""
    from ..progress import progress_bar
    from ..score_cache import cached_scores
    from ..scoring import weights_digest
    series = series_checkpoints(cfg, aligned, progress)
    n = cfg.compactness(cfg.model).n_calibration
    out = []
    bar = progress_bar(total=len(series) * len(cfg.seeds), desc="compression stage series", enabled=progress,
                       unit="scoring")
    for label, position, where in series:
        model, tok = _load_checkpoint(where, aligned, cfg.scale, cfg.device)
        digest = weights_digest(model)
        for seed in cfg.seeds:
            kw = dict(batch_size=batch_size, digest=digest)
            prune = cached_scores(model, tok, TaskData.sample(data.harmful_pool, n, seed), score="signed", role="prune", **kw)
            ben = cached_scores(model, tok, TaskData.sample(data.benign_pool, n, seed), score="abs", role="preserve", **kw)
            curve, at_q = curve_and_at(prune, q)
            out.append({"stage": label, "align_fraction": position, "seed": seed, **separability(prune, ben, p, q),
                        "concentration": curve, "concentration_at_q": at_q})
            bar.update(1)
        del model
    bar.close()
    return out


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------
def run(cfg: CompressionConfig, *, members: Mapping[str, Member] | None = None, write: bool = True,
        progress: bool = True) -> dict[str, Any]:
    """Both members' sweeps, the five readings with intervals, the stage series; the result is
    written under the pair (`results/<aligned>_vs_<unaligned>/compression.json`, `results_folder`)."""
    from ..progress import progress_bar, report
    t0 = time.perf_counter()
    aligned_name, unaligned_name = pair_of(cfg.model, cfg.counterpart)
    members = dict(members or {})
    for name in (aligned_name, unaligned_name):
        if name not in members:
            report(f"compression: loading {name}", enabled=progress)
            members[name] = Member(name, cfg, progress=progress)
    A, B = members[aligned_name], members[unaligned_name]
    if [e.prompt for e in A.data.test_harmful] != [e.prompt for e in B.data.test_harmful]:
        raise ValueError(f"{aligned_name} and {unaligned_name} would be measured on different held-out harmful prompts: "
                         "the pair must share its evaluation data (same data source and sizes)")
    p = cfg.p if cfg.p is not None else A.loaded.preset.p
    qs = sorted(cfg.qs or default_qs(A.loaded))
    # the reference q of readings 1, 3, 5: the swept q nearest (in log) to the stated or preset q
    wanted = cfg.q if cfg.q is not None else A.loaded.preset.q
    q_ref = min(qs, key=lambda x: abs(np.log(x / wanted)))
    baselines = {m.name: m.sweep.evaluate_baseline(["harm_prefill", "utility"]) for m in (A, B)}

    # -- the harm sweep: B-TAP on the aligned model; the unaligned model's held to its per-matrix counts
    rows: list[dict[str, Any]] = []
    masks: dict[tuple[str, int, float], Mask] = {}
    bar = progress_bar(total=2 * len(cfg.seeds) * len(qs), desc=f"compression {pair_name(aligned_name, unaligned_name)}",
                       enabled=progress, unit="state")
    for seed in cfg.seeds:
        (pa, ba), (pb, bb) = A.scores(seed), B.scores(seed)
        for q in qs:
            ma = A.sweep.select(pa, ba, p, q)
            mb = B.sweep.matched(pb, bb, p, ma, "btap_matched_count")
            for member, mask in ((A, ma), (B, mb)):
                state, reused = member.sweep.evaluate(mask, ["harm_prefill"])
                rows.append({"member": member.name, "seed": seed, "q": q, "count": mask.count(), "mask": mask.digest(),
                             "measures": ["harm_prefill"], "reused_evaluation": reused, **state.to_dict()})
                masks[(member.name, seed, q)] = mask
                bar.update(1)
    bar.close()
    result: dict[str, Any] = {
        "finding": "compression", "model": aligned_name, "scale": cfg.scale, "config": asdict(cfg),
        "folder": results_folder(aligned_name, unaligned_name),
        "pair": {"aligned": aligned_name, "unaligned": unaligned_name, "name": pair_name(aligned_name, unaligned_name)},
        "placement": {n: placement_of(m.loaded) for n, m in members.items()},
        "p": p, "q": q_ref, "qs": qs, "readings": READINGS, "targets": list(TARGETS), "utility_at": UTILITY_AT,
        "members": {}, "runs": rows,
    }
    for m in (A, B):
        result["members"][m.name] = {
            "aligned": m.loaded.preset.aligned, "chat_format": m.loaded.chat_format,
            **m.sweep.describe(baselines[m.name]), "data": m.data.counts(),
            "calibration_per_seed": {"harmful": min(m.cc.n_calibration, len(m.data.harmful_pool)),
                                     "benign": min(m.cc.n_calibration, len(m.data.benign_pool))},
            "decoder_linear_weights": sum(v.numel() for v in m.scores(cfg.seeds[0])[0].values()),
        }
    for key in ("kind", "judge", "judges", "generation", "total_parameters"):   # the pair shares these
        result[key] = result["members"][aligned_name][key]
    result["counts"] = count_axis(result)

    # -- reading 4: utility at the two swept q bracketing each member's 50% cut (seed-mean curve)
    brackets = {m.name: utility_brackets(result, m.name) for m in (A, B)}
    bar = progress_bar(total=len(cfg.seeds) * sum(map(len, brackets.values())), desc="compression: utility at matched cut",
                       enabled=progress, unit="state")
    for m in (A, B):
        for q in brackets[m.name]:
            for seed in cfg.seeds:
                state, reused = m.sweep.evaluate(masks[(m.name, seed, q)], ["harm_prefill", "utility"])
                rows.append({"member": m.name, "seed": seed, "q": q, "count": masks[(m.name, seed, q)].count(),
                             "mask": masks[(m.name, seed, q)].digest(), "measures": ["harm_prefill", "utility"],
                             "reused_evaluation": reused, **state.to_dict()})
                bar.update(1)
    bar.close()

    # -- readings 3 and 5 on the pair, per seed and q
    result["score_readings"] = [
        {"member": m.name, "seed": seed, "q": q, **separability(*m.scores(seed), p, q)}
        for m in (A, B) for seed in cfg.seeds for q in qs]
    result["concentration"] = {"fractions": list(CONCENTRATION_FRACTIONS), "rows": [
        {"member": m.name, "seed": seed, **dict(zip(("curve", "at_q"), curve_and_at(m.scores(seed)[0], q_ref)))}
        for m in (A, B) for seed in cfg.seeds]}
    has_series = A.loaded.preset.source == "organism" or bool(series_checkpoints(cfg, A.loaded))
    if cfg.series and has_series:
        result["series"] = _series_readings(cfg, A.loaded, A.data, p, q_ref, A.sweep.batch_size, progress)
    else:
        result["series"] = []
        result["series_skipped"] = ("switched off (series=False)" if not cfg.series else
                                    f"{aligned_name} has no training-stage series (the OLMo-3 stages run by name on a GPU: "
                                    "--model olmo-3-7b-instruct)")
    result["summary"] = summarise(result)
    result["headline"] = headline(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    head_masks = {f"{'aligned' if n == aligned_name else 'unaligned'}-seed{s}-q{q:g}": mk
                  for (n, s, q), mk in masks.items() if q == q_ref}
    return write_result(result, masks=head_masks, write=write)


def count_axis(result: dict[str, Any]) -> list[float]:
    """Mean zeroed count per swept q (the aligned member's B-TAP count; the unaligned member's is
    held to it matrix by matrix, so both share this axis)."""
    al = result["pair"]["aligned"]
    return [float(np.mean([r["count"] for r in result["runs"] if r["member"] == al and r["q"] == q
                           and r["measures"] == ["harm_prefill"]])) for q in result["qs"]]


def _harm_grids(result: dict[str, Any], member: str) -> tuple[list[float], list[np.ndarray]]:
    """(the member's unpruned harm items, one seeds x prompts grid per swept q)."""
    base = result["members"][member]["baseline"]["items"]["harm_prefill"]
    grids = []
    for q in result["qs"]:
        rs = sorted((r for r in result["runs"] if r["member"] == member and r["q"] == q and r["measures"] == ["harm_prefill"]),
                    key=lambda r: r["seed"])
        grids.append(np.asarray([[np.nan if x is None else x for x in r["items"]["harm_prefill"]] for r in rs], float))
    return base, grids


def seed_mean_cuts(result: dict[str, Any], member: str) -> np.ndarray:
    base, grids = _harm_grids(result, member)
    b = float(np.nanmean(base))
    return np.asarray([1 - np.nanmean(g) / b if b > 0 else np.nan for g in grids])


def utility_brackets(result: dict[str, Any], member: str, target: float = UTILITY_AT) -> list[float]:
    """The swept q just below and at the member's first crossing of `target` on the seed-mean
    curve (one q when the first swept q already reaches it; none when no q does)."""
    cuts = seed_mean_cuts(result, member)
    hit = [i for i, c in enumerate(cuts) if c >= target]
    if not hit:
        return []
    i = hit[0]
    return [result["qs"][j] for j in ([i - 1, i] if i > 0 else [i])]


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The five readings per member and as an aligned-advantage interval, plus the curves the
    figures draw (harm cut per q with intervals, concentration, the stage series)."""
    al, un = result["pair"]["aligned"], result["pair"]["unaligned"]
    counts = result.get("counts") or count_axis(result)
    qs = result["qs"]
    q_ref = result["q"]
    i_ref = qs.index(q_ref)
    beyond = 2 * counts[-1]
    harm = {m: _harm_grids(result, m) for m in (al, un)}
    curves = {}
    for m, (base, grids) in harm.items():
        curves[m] = [_iv(stats.relative_drop(base, g)) | {"q": q, "count": c} for q, c, g in zip(qs, counts, grids)]

    # reading 1: cut_aligned - cut_unaligned at every q (paired: same prompts, bootstrap jointly)
    def cut_diff(i):
        def stat(mm):
            ca = 1 - mm["a"] / np.where(mm["a0"] > 0, mm["a0"], np.nan)
            cb = 1 - mm["b"] / np.where(mm["b0"] > 0, mm["b0"], np.nan)
            return ca - cb
        return _iv(stats.bootstrap(stat, {"a0": harm[al][0], "a": harm[al][1][i], "b0": harm[un][0], "b": harm[un][1][i]}))
    r1 = [cut_diff(i) | {"q": q, "count": c} for i, (q, c) in enumerate(zip(qs, counts))]

    # reading 2: crossing counts, per member and as the ratio unaligned / aligned (> 1 favours aligned)
    grids = {"a0": harm[al][0], "b0": harm[un][0], **{f"a{i}": g for i, g in enumerate(harm[al][1])},
             **{f"b{i}": g for i, g in enumerate(harm[un][1])}}

    def curve(mm, k):
        b0 = np.asarray(mm[f"{k}0"], float)
        return np.stack([1 - np.asarray(mm[f"{k}{i}"], float) / np.where(b0 > 0, b0, np.nan) for i in range(len(qs))], -1)
    r2 = {}
    for t in TARGETS:
        ca = stats.bootstrap(lambda mm: crossing(counts, curve(mm, "a"), t, beyond), grids)
        cb = stats.bootstrap(lambda mm: crossing(counts, curve(mm, "b"), t, beyond), grids)
        ratio = stats.bootstrap(lambda mm: crossing(counts, curve(mm, "b"), t, beyond)
                                / crossing(counts, curve(mm, "a"), t, beyond), grids)
        r2[f"{t:g}"] = {"aligned": _iv(ca), "unaligned": _iv(cb), "ratio": _iv(ratio), "beyond_sweep": beyond}

    # reading 3 and 5: per-seed score readings, difference unaligned - aligned (> 0 favours aligned)
    def per_seed(rows, member, key, q=None):
        return [r[key] for r in sorted(rows, key=lambda r: r["seed"]) if r["member"] == member and (q is None or r["q"] == q)]
    sep = result["score_readings"]
    r3 = {}
    for key in ("inside", "jaccard"):
        a, b = _seed_grid(per_seed(sep, al, key, q_ref)), _seed_grid(per_seed(sep, un, key, q_ref))
        r3[key] = {"aligned": _iv(stats.mean_interval(a)), "unaligned": _iv(stats.mean_interval(b)),
                   "advantage": _iv(stats.bootstrap(lambda mm: mm["b"] - mm["a"], {"a": a, "b": b})),
                   "random": float(np.mean(per_seed(sep, al, f"{key}_random", q_ref)))}
    sep_by_q = {m: [{"q": q, "inside": float(np.mean(per_seed(sep, m, "inside", q))),
                     "inside_random": float(np.mean(per_seed(sep, m, "inside_random", q))),
                     "jaccard": float(np.mean(per_seed(sep, m, "jaccard", q)))} for q in qs] for m in (al, un)}
    conc = result["concentration"]["rows"]
    ca_, cb_ = _seed_grid(per_seed(conc, al, "at_q")), _seed_grid(per_seed(conc, un, "at_q"))
    r5 = {"aligned": _iv(stats.mean_interval(ca_)), "unaligned": _iv(stats.mean_interval(cb_)),
          "advantage": _iv(stats.bootstrap(lambda mm: mm["a"] - mm["b"], {"a": ca_, "b": cb_})),
          "random": q_ref, "fraction": q_ref}
    conc_curves = {m: np.mean([r["curve"] for r in conc if r["member"] == m], 0).tolist() for m in (al, un)}

    # reading 4: utility drop at each member's 50% cut, interpolated between its bracketing q; the
    # advantage (unaligned drop - aligned drop) bootstraps both members jointly (same benign prompts)
    r4: dict[str, Any] = {}
    grids4: dict[str, dict[str, Any]] = {}
    for m, key in ((al, "a"), (un, "b")):
        r4[m], g = utility_at_cut(result, m, counts)
        if g:
            grids4[key] = g
    if len(grids4) == 2:
        joint = {f"{k}{n}": v for k, g in grids4.items() for n, v in g["grids"].items()}
        r4["advantage"] = _iv(stats.bootstrap(lambda mm: grids4["b"]["stat"](mm, "b") - grids4["a"]["stat"](mm, "a"), joint))
    else:
        r4["advantage"] = None

    series = _series_summary(result.get("series") or [])
    return {"curves": curves, "cut_at_count": r1, "cut_at_count_ref": r1[i_ref], "fewest_weights": r2,
            "separability": r3, "separability_by_q": sep_by_q, "utility_at_cut": r4, "concentration": r5,
            "concentration_curves": conc_curves, "series": series}


def utility_at_cut(result: dict[str, Any], member: str, counts: list[float]) -> tuple[dict[str, Any], dict | None]:
    """The utility drop (points, over every benign test prompt of every family pooled) at the
    member's 50%-cut count, interpolated in log count between the two bracketing swept q. The
    interpolation weight is fixed from the seed-mean curve, so the statistic is linear in the means
    and bootstraps paired. Returns (the reading, its grids and statistic for a joint bootstrap)."""
    qs = result["qs"]
    brackets = utility_brackets(result, member)
    if not brackets:
        return {"not_reached": f"no swept q cut {member}'s harm by {UTILITY_AT:.0%}"}, None
    base_state = result["members"][member]["baseline"]
    util = [u for u in utility_metrics(base_state) if u.startswith("utility:")]
    cuts = seed_mean_cuts(result, member)
    idx = [qs.index(q) for q in brackets]
    w = 1.0
    if len(idx) == 2 and cuts[idx[1]] > cuts[idx[0]]:
        w = float(np.clip((UTILITY_AT - cuts[idx[0]]) / (cuts[idx[1]] - cuts[idx[0]]), 0, 1))
    weights = [1 - w, w] if len(idx) == 2 else [1.0]

    def pooled(items: dict[str, list]) -> list[float]:
        return [np.nan if x is None else x for u in util for x in items[u]]
    grids: dict[str, Any] = {"base": pooled(base_state["items"])}
    for j, q in enumerate(brackets):
        rs = sorted((r for r in result["runs"] if r["member"] == member and r["q"] == q and "utility" in r["measures"]),
                    key=lambda r: r["seed"])
        grids[str(j)] = [pooled(r["items"]) for r in rs]

    def stat(mm, prefix=""):
        return mm[f"{prefix}base"] - sum(wt * mm[f"{prefix}{j}"] for j, wt in enumerate(weights))
    iv = stats.bootstrap(stat, grids)
    count = float(np.exp((1 - w) * np.log(counts[idx[0]]) + w * np.log(counts[idx[-1]])))
    return ({"brackets": brackets, "weight": w, "count": count, "families": util, **_iv(iv)},
            {"grids": grids, "stat": stat})


def _series_summary(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label in dict.fromkeys(r["stage"] for r in series):
        rs = [r for r in series if r["stage"] == label]
        row = {"stage": label, "align_fraction": rs[0]["align_fraction"], "n_seeds": len(rs)}
        for key in ("inside", "jaccard", "concentration_at_q"):
            iv = stats.mean_interval(_seed_grid([r[key] for r in rs]))
            row[key] = {"value": iv.value, "lo": iv.lo, "hi": iv.hi}
        row["inside_random"] = float(np.mean([r["inside_random"] for r in rs]))
        out.append(row)
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """Each reading's verdict (which member it favours, from its interval) and the pair's verdict."""
    s = result["summary"]
    al, un = result["pair"]["aligned"], result["pair"]["unaligned"]
    floors = {m: MIN_BASELINE_HARM_BY_JUDGE.get(result["members"][m].get("judge", ""), MIN_BASELINE_HARM) for m in (al, un)}
    base = {m: result["members"][m]["baseline"]["values"]["harm_prefill"] for m in (al, un)}
    r4 = s["utility_at_cut"].get("advantage")
    per = {
        "cut_at_count": favours(s["cut_at_count_ref"]),
        "fewest_weights": favours(s["fewest_weights"][f"{TARGETS[0]:g}"]["ratio"], neutral=1.0),
        "separability": favours(s["separability"]["inside"]["advantage"]),
        "utility_at_cut": favours(r4) if r4 else "not measured",
        "concentration": favours(s["concentration"]["advantage"]),
    }
    out: dict[str, Any] = {
        "criterion": ("reproduced if readings 2 (fewest weights for a 50% harm cut: the interval of unaligned/aligned "
                      "count lies above 1) and 3 (separability: the interval of the unaligned minus the aligned share "
                      "of the harmful top-q set inside the benign top-p set lies above 0) both favour the aligned "
                      "model; partly reproduced if one does; not reproduced otherwise"),
        "readings": per, "q": result["q"], "baseline_harm_prefill": base, "floors": floors,
    }
    low = [m for m in (al, un) if base[m] < floors[m]]
    if low:
        out["note"] = "; ".join(f"{m}'s harmfulness under prefilling is {base[m]:.3f} (< {floors[m]})" for m in low) + \
            ": too little harmful generation to compare the pair"
    return out


def verdict(result: dict[str, Any]) -> tuple[str, str]:
    head = result.get("headline", {})
    s = result["summary"]
    pair = result["pair"]["name"]
    if head.get("note"):
        return f"{pair}: {head['note']}", "not measurable"
    r2 = s["fewest_weights"][f"{TARGETS[0]:g}"]
    r3 = s["separability"]["inside"]
    measured = (f"{pair}: 50% harm cut at {r2['aligned']['value']:,.0f} vs {_count_text(r2['unaligned']['value'], r2)} "
                f"weights (unaligned/aligned {r2['ratio']['value']:.2f} [{r2['ratio']['lo']:.2f}, {r2['ratio']['hi']:.2f}]); "
                f"harmful top-q inside benign top-p {r3['aligned']['value']:.1%} vs {r3['unaligned']['value']:.1%} "
                f"(random {r3['random']:.1%}); readings favour: "
                + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in head["readings"].items()))
    if result.get("judge") and result["judge"] != "organism (exact)":
        measured += f" (judge: {result['judge']})"
    n = sum(head["readings"][k] == "aligned" for k in ("fewest_weights", "separability"))
    return measured, {2: "reproduced", 1: "partly reproduced"}.get(n, "not reproduced")


def _count_text(value: float, r2: dict[str, Any]) -> str:
    return f"> {r2['beyond_sweep'] / 2:,.0f}" if value >= r2["beyond_sweep"] else f"{value:,.0f}"


__all__ = ["CompressionConfig", "run", "summarise", "headline", "verdict", "separability", "concentration", "crossing",
           "favours", "pair_of", "pair_name", "Member", "READINGS", "TARGETS"]
