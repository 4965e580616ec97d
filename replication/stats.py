"""Intervals for every number a verdict reads: a bootstrap over prompts and calibration seeds.

A measurement here is a grid of per-item values: one row per calibration seed (or one row for
the unpruned model), one column per held-out prompt, the same prompts in every row and in every
grid of one comparison. `bootstrap` resamples prompts (columns, shared by all grids, so a
comparison stays paired prompt for prompt) and, where a grid has several rows, seeds (rows, per
grid), recomputes the statistic on the resampled means, and reports the percentile interval.

    drop = bootstrap(lambda m: 1 - m["pruned"] / m["base"], {"base": base_items, "pruned": seed_by_item})

Pairing matters: utility "drops by <= 5 points" is read off the paired difference, whose interval
is much narrower than the two marginal intervals when pruning changes only a few answers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
#: a fixed resampling seed: the same measurements always give the same interval
BOOT_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval and the sizes behind it."""

    value: float
    lo: float
    hi: float
    n_prompts: int
    n_seeds: int
    level: float = LEVEL
    method: str = "percentile bootstrap over prompts (paired) and seeds"

    def to_dict(self) -> dict:
        return asdict(self)

    def brief(self) -> dict[str, float]:
        """Value and bounds only: what a result stores per cell, where the sizes are stated once."""
        return {"value": self.value, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Interval":
        return cls(**{k: d[k] for k in ("value", "lo", "hi", "n_prompts", "n_seeds", "level", "method") if k in d})

    def excludes(self, x: float) -> bool:
        return x < self.lo or x > self.hi

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def as_grid(values) -> np.ndarray:
    """Per-item values as a 2-D float array (seeds x prompts); a flat list is one seed."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"a measurement must be seeds x prompts with at least one prompt, got shape {arr.shape}")
    return arr


def bootstrap(statistic: Callable[[Mapping[str, float]], float], grids: Mapping[str, Sequence], *,
              n_boot: int = N_BOOT, level: float = LEVEL, seed: int = BOOT_SEED) -> Interval:
    """`statistic(means)` with a percentile interval; `means[name]` is the mean of grid `name` (a
    scalar for the point estimate, an array over resamples for the interval: write `statistic`
    with numpy operations).

    Every grid must hold the same prompts (columns); rows are seeds, resampled per grid. NaN
    items (a prompt a measure could not read) are left out of the means, not counted as zero."""
    arrs = {k: as_grid(v) for k, v in grids.items()}
    widths = {a.shape[1] for a in arrs.values()}
    if len(widths) != 1:
        raise ValueError(f"paired grids must hold the same prompts; got widths {sorted(widths)} for {list(arrs)}")
    n_prompts = widths.pop()
    point = float(statistic({k: np.float64(np.nanmean(a)) for k, a in arrs.items()}))
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n_prompts, (n_boot, n_prompts))
    means = {}
    for k, a in arrs.items():   # vectorised: (n_boot, seeds, prompts) resampled cells per grid
        rows = rng.integers(0, a.shape[0], (n_boot, a.shape[0])) if a.shape[0] > 1 else np.zeros((n_boot, 1), int)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN resample is dropped below
            means[k] = np.nanmean(a[rows[:, :, None], cols[:, None, :]], axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = np.asarray(statistic(means), dtype=float).reshape(-1)
    stats = stats[np.isfinite(stats)]
    alpha = (1 - level) / 2
    lo, hi = (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))) if len(stats) else (math.nan,) * 2
    return Interval(point, lo, hi, n_prompts=n_prompts, n_seeds=max(a.shape[0] for a in arrs.values()), level=level)


def mean_interval(values, **kw) -> Interval:
    """The mean of one measurement (seeds x prompts), with its interval."""
    return bootstrap(lambda m: m["x"], {"x": values}, **kw)


def relative_drop(base, pruned, **kw) -> Interval:
    """1 - pruned / base (e.g. harmfulness cut by pruning), paired over prompts."""
    def stat(m):
        return np.where(m["base"] > 0, 1.0 - m["pruned"] / np.where(m["base"] > 0, m["base"], 1.0), np.nan)
    return bootstrap(stat, {"base": base, "pruned": pruned}, **kw)


def difference(base, pruned, **kw) -> Interval:
    """base - pruned (e.g. a utility drop in points of accuracy), paired over prompts."""
    return bootstrap(lambda m: m["base"] - m["pruned"], {"base": base, "pruned": pruned}, **kw)


def half_width_for(p: float, n: int, level: float = LEVEL) -> float:
    """The normal-approximation half-width of a proportion's interval: for sizing evaluation sets."""
    z = {0.95: 1.959964, 0.9: 1.644854, 0.99: 2.575829}.get(level, 1.959964)
    return z * math.sqrt(max(p * (1 - p), 1e-12) / n)


__all__ = ["Interval", "bootstrap", "mean_interval", "relative_drop", "difference", "as_grid", "half_width_for",
           "LEVEL", "N_BOOT"]
