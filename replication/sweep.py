"""Sweep helpers: score once, select per q, evaluate each distinct mask once, matched baselines.

A finding's loop is "for each calibration seed, score; for each budget, select masks (B-TAP and its
baselines at the same per-matrix count); evaluate each". `Sweep` owns the two caches that make
that cheap: scores on disk (`score_cache`, shared across findings and runs) and evaluations in
memory by mask digest (equal masks give equal numbers; a mask that zeroes nothing is the
unpruned model). `baselines` builds the matched-count controls.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .data import Example
from .measure import Evaluator, State
from .mask import Mask, applied
from .pruning import matched_count_mask, select_weights
from .score_cache import cached_scores
from .scoring import Scores, weights_digest


@contextmanager
def quiet_selection() -> Iterator[None]:
    """Silence the 'rounds to zero candidates' warning inside a sweep (the count is recorded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


class Sweep:
    """Scores, masks and evaluations of one loaded model in one experiment."""

    def __init__(self, loaded, evaluator: Evaluator, *, score_batch_size: int | None = None,
                 use_score_cache: bool = True):
        self.loaded, self.evaluator = loaded, evaluator
        self.model, self.tok = loaded.model, loaded.tokenizer
        self.batch_size = score_batch_size or loaded.preset.score_batch_size
        self.use_score_cache = use_score_cache
        self._digest = weights_digest(self.model) if use_score_cache else None
        self._evaluations: dict[tuple, State] = {}
        self.baseline_key: tuple | None = None
        self.n_evaluated = 0
        self.n_reused = 0
        self.total_parameters = sum(p.numel() for p in self.model.parameters())

    # -- scores ------------------------------------------------------------------------------------
    def scores(self, examples: Sequence[Example], *, score: str, role: str, fmt: str = "raw",
               skip_response_tokens: int = 0) -> Scores:
        """Importance scores of the unpruned model on `examples` (through the disk cache)."""
        return cached_scores(self.model, self.tok, examples, score=score, role=role, fmt=fmt,
                             skip_response_tokens=skip_response_tokens, batch_size=self.batch_size,
                             digest=self._digest, use_cache=self.use_score_cache)

    def btap_scores(self, harmful: Sequence[Example], benign: Sequence[Example], fmt: str = "raw",
                    skip_response_tokens: int = 0) -> tuple[Scores, Scores]:
        """The paper's pair: signed SNIP on the prune side, absolute SNIP on the preserve side."""
        return (self.scores(harmful, score="signed", role="prune", fmt=fmt, skip_response_tokens=skip_response_tokens),
                self.scores(benign, score="abs", role="preserve", fmt=fmt))

    # -- masks -------------------------------------------------------------------------------------
    @staticmethod
    def select(prune: Scores, preserve: Scores, p: float, q: float, scope: str = "per_matrix") -> Mask:
        with quiet_selection():
            return select_weights(prune, preserve, p, q, scope)

    def random_like(self, mask: Mask, seed: int) -> Mask:
        """Random weights, the same count in the same matrices."""
        return Mask.random_like(mask, self.model, seed)

    @staticmethod
    def matched(prune: Scores, preserve: Scores, p: float, like: Mask, method: str) -> Mask:
        """Another data set's B-TAP weights held to `like`'s per-matrix counts."""
        return matched_count_mask(prune, preserve, p, like.counts(), {"method": method, "like_digest": like.digest()})

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, mask: Mask | None, measures: Sequence[str], *, forward_only: bool = False,
                 refusal_mask=None, categories: Sequence[str] | None = None) -> tuple[State, bool]:
        """The state with `mask` applied (None: unpruned); returns (state, reused). A mask whose
        digest was evaluated with the same measures, or which zeroes nothing, reuses that state (the
        baseline's, where it has every measure asked for)."""
        key = (None if mask is None or mask.count() == 0 else mask.digest(), tuple(measures), forward_only,
               tuple(categories or ()))
        if key in self._evaluations:
            self.n_reused += 1
            return self._evaluations[key], True
        if key[0] is None and self.baseline_key is not None and set(measures) <= set(self.baseline_key[1]):
            base = self._evaluations[self.baseline_key]
            names = [n for n in base.values
                     if _measure_of(n) in measures or (n == "overrefusal" and "utility" in measures)]
            state = base.subset(names)
            if forward_only:
                state = self.evaluator.forward_only_view(state)
            self._evaluations[key] = state
            self.n_reused += 1
            return state, True
        kw: dict[str, Any] = dict(forward_only=forward_only, refusal_mask=refusal_mask, categories=categories)
        if mask is None or mask.count() == 0:
            state = self.evaluator.evaluate(measures, **kw)
        else:
            with applied(self.model, mask):
                state = self.evaluator.evaluate(measures, **kw)
        self._evaluations[key] = state
        self.n_evaluated += 1
        return state, False

    def describe(self, baseline: State) -> dict[str, Any]:
        """The fields every finding's result shares: what was judged by whom, on which model state, and
        how many evaluations were run or reused (call at the end of a run)."""
        ev = self.evaluator
        return {"kind": "organism" if ev.organism else "real", "total_parameters": self.total_parameters,
                "judge": "organism (exact)" if ev.organism else ev.data.harm_judge.label,
                "judges": ev.metric_info(baseline), "generation": ev.gen.to_dict(), "baseline": baseline.to_dict(),
                "evaluations": {"evaluated": self.n_evaluated, "reused": self.n_reused}}

    def evaluate_baseline(self, measures: Sequence[str], *, refusal_mask=None,
                          categories: Sequence[str] | None = None) -> State:
        """The unpruned model with every measure (later empty masks reuse it)."""
        state, _ = self.evaluate(None, measures, refusal_mask=refusal_mask, categories=categories)
        self.baseline_key = (None, tuple(measures), False, tuple(categories or ()))
        return state


def _measure_of(metric: str) -> str:
    """The measure that writes a metric name (`utility:x` -> utility, `harm_prefill_nll` -> harm_prefill)."""
    if metric.startswith(("utility:", "nll:")):
        return "utility"
    if metric.startswith("detection"):
        return "detection"
    for m in ("harm_ra_prefill", "harm_prefill", "harm_none", "explanation", "overrefusal"):
        if metric.startswith(m):
            return m
    if metric.startswith("refusal_ra_prefill"):
        return "harm_ra_prefill"
    if metric.startswith("refusal_prefill"):
        return "harm_prefill"
    if metric == "refusal":
        return "refusal"
    return metric


__all__ = ["Sweep", "quiet_selection"]
