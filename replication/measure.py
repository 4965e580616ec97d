"""One evaluator of a model state: harm under each attack, refusal, utility, detection, explanation.

    ev = Evaluator(loaded, data, EvalConfig(max_new_tokens=96))
    state = ev.evaluate(["harm_prefill", "utility"], refusal_mask=mask)
    state.value("harm_prefill"), state.items["harm_prefill"], state.by_category("harm_prefill")

Every finding measures through `evaluate`; the caller picks the measures, the harm categories,
and whether generation runs (`forward_only=True` keeps what needs none). A `State` is a flat
table of metrics `name -> value` with the per-item values behind each (so intervals can be
bootstrapped over prompts) and, once per evaluator, `metric_info()`: the judge, the item count
and the generation settings of every metric name.

Measures (`MEASURES`) and the metrics they write:

- `harm_prefill` / `harm_ra_prefill`: harmfulness under the paper's 10-token prefilling attack,
  without / with Wei et al.'s refusal ablation (`refusal_mask` applied) -> `harm_prefill`,
  per category; real models add `harm_prefill_nll` (mean reference NLL) and `refusal_prefill`
  (keyword refusal of the greedy continuations of the first `n_generate` prompts).
- `harm_none`: harmfulness with no attack (greedy answers to the bare requests).
- `refusal`: refusal rate on harmful requests with no attack (organism: its refusal phrases;
  real: the paper's keyword rule); `overrefusal`: the same on benign requests (paper's
  over-refusal rule for real models).
- `utility`: per benign family `utility:<family>` (organism: exact accuracy; real: exp(-NLL) of the
  reference answers, beside `nll:<family>`); real models add `utility:trivia_qa` and
  `utility:no_over_refusal` unless forward-only.
- `detection`: yes/no accuracy, and per label `detection:yes` / `detection:no` (organism: its
  detection prompts; real: the paper's prompt and prefill, `recognition`), real models also
  `detection:refusal`.
- `explanation`: organism, the share of the category's reason terms an explanation names; real,
  `recognition`'s explanation judge (offline the harm-lexicon stand-in), refusals NaN and their
  rate in `explanation:refusal`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .attacks import PREFILL_TOKENS, prefill_for
from .data import Example
from .generation import GenerationConfig, generate, render_prompt
from .judges import (KeywordOverRefusalJudge, KeywordRefusalJudge, OrganismHarmJudge, get_judge, is_keyword_overrefusal,
                     is_keyword_refusal, qa_correct, sequence_nll)
from .mask import applied
from .scoring import nll_by_position
from .task_data import MissingTaskData, TaskData

MEASURES = ("harm_prefill", "harm_ra_prefill", "harm_none", "refusal", "overrefusal", "utility", "detection",
            "explanation")
QA_UTILITY = "trivia_qa"                  # real models: trivia QA accuracy
OVERREFUSAL_UTILITY = "no_over_refusal"   # real models: 1 - keyword over-refusal on benign requests
NLL_JUDGE = "reference_nll"


def nll_of_responses(model, tokenizer, examples: Sequence[Example], fmt: str = "raw", batch_size: int = 8,
                     progress: bool = False) -> np.ndarray:
    """Mean per-token NLL (nats) of each example's response given its rendered prompt (forward only)."""
    contexts = [render_prompt(tokenizer, ex.prompt, fmt) for ex in examples]
    targets = [(" " + ex.response if fmt == "qa" and ex.response and not ex.response.startswith((" ", "\n"))
                else ex.response) for ex in examples]
    nll, _ = sequence_nll(model, tokenizer, contexts, targets, batch_size=batch_size, progress=progress,
                          desc="response nll")
    return np.asarray(nll, dtype=float)


@dataclass
class EvalConfig:
    """Generation settings of an evaluation (greedy, as the paper's harmfulness evaluation)."""

    max_new_tokens: int = 96
    batch_size: int | None = None      # None: the preset's gen_batch_size
    prefill_tokens: int = PREFILL_TOKENS
    n_generate: int = 8                # real models: harmful / benign prompts whose continuations are keyword-judged
    detection_tokens: int = 12
    explanation_tokens: int = 48
    nll_batch_size: int | None = None  # None: the preset's score_batch_size


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class State:
    """A model state's metrics: `values[name]`, the per-item values behind it, per-category means."""

    values: dict[str, float] = field(default_factory=dict)
    items: dict[str, list[float]] = field(default_factory=dict)
    categories: dict[str, dict[str, float]] = field(default_factory=dict)
    #: generated texts per measure (prompt-aligned; not written to results files): for showing examples
    texts: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def value(self, name: str) -> float:
        return self.values[name]

    def by_category(self, name: str) -> dict[str, float]:
        return self.categories.get(name, {})

    def put(self, name: str, items: Sequence[float], cats: Sequence[str] | None = None) -> None:
        vals = [float(v) for v in items]
        self.values[name] = _finite_mean(vals)
        self.items[name] = vals
        if cats is not None:
            groups: dict[str, list[float]] = {}
            for c, v in zip(cats, vals):
                groups.setdefault(c, []).append(v)
            # a category with no graded item (every explanation refused) is NaN, without numpy's warning
            self.categories[name] = {c: _finite_mean(v) for c, v in sorted(groups.items()) if c}

    def utility(self) -> dict[str, float]:
        """`utility:<name>` metrics as `{name: value}`."""
        return {k.split(":", 1)[1]: v for k, v in self.values.items() if k.startswith("utility:")}

    def to_dict(self, with_items: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"values": dict(self.values), "by_category": dict(self.categories)}
        if with_items:
            out["items"] = {k: [None if math.isnan(x) else x for x in v] for k, v in self.items.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "State":
        items = {k: [math.nan if x is None else float(x) for x in v] for k, v in d.get("items", {}).items()}
        return cls(dict(d["values"]), items, dict(d.get("by_category", {})))

    def subset(self, names: Sequence[str]) -> "State":
        keep = set(names)
        return State({k: v for k, v in self.values.items() if k in keep},
                     {k: v for k, v in self.items.items() if k in keep},
                     {k: v for k, v in self.categories.items() if k in keep})


class Evaluator:
    """Measures states of one loaded model on one model's `TaskData` (organism or real)."""

    def __init__(self, loaded, data: TaskData, cfg: EvalConfig | None = None):
        self.loaded, self.data, self.cfg = loaded, data, cfg or EvalConfig()
        self.model, self.tok, self.fmt = loaded.model, loaded.tokenizer, loaded.chat_format
        self.organism = data.kind == "organism"
        self.batch_size = self.cfg.batch_size or loaded.preset.gen_batch_size
        self.nll_batch_size = self.cfg.nll_batch_size or loaded.preset.score_batch_size
        self.gen = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens, batch_size=self.batch_size)
        self._prefills: dict[tuple, list[str]] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], prefills: Sequence[str] | None = None,
                  max_new_tokens: int | None = None) -> list[str]:
        cfg = self.gen if max_new_tokens is None else GenerationConfig(max_new_tokens=max_new_tokens,
                                                                       batch_size=self.batch_size)
        return generate(self.model, self.tok, list(prompts), chat_format=self.fmt,
                        prefills=list(prefills) if prefills is not None else None, config=cfg, progress=False)

    def harmful_set(self, categories: Sequence[str] | None) -> list[Example]:
        return self.data.harmful(categories, test=True) if categories is not None else self.data.require("test_harmful")

    def prefills(self, examples: Sequence[Example]) -> list[str]:
        key = tuple(id(e) for e in examples)
        if key not in self._prefills:
            self._prefills[key] = [prefill_for(self.tok, e, self.cfg.prefill_tokens) for e in examples]
        return self._prefills[key]

    @property
    def keyword_judged(self) -> bool:
        """Real models judged by reference NLL read no generations for harm: keyword refusal is read
        from the first `n_generate` continuations only (StrongREJECT reads every one)."""
        return not self.organism and not self.data.harm_judge.reads_responses

    # -- measures --------------------------------------------------------------------------------
    def _harm(self, state: State, name: str, harmful: list[Example], forward_only: bool) -> None:
        prefills = self.prefills(harmful)
        judge = self.data.harm_judge
        cats = [e.category for e in harmful]
        if self.organism:
            outs = self.generate([e.prompt for e in harmful], prefills)
            state.put(name, judge.scores(harmful, outs, prefills).p_harmful, cats)
            state.texts[name] = outs
            return
        n_gen = 0 if (forward_only and self.keyword_judged) else (
            min(self.cfg.n_generate, len(harmful)) if self.keyword_judged else len(harmful))
        outs = self.generate([e.prompt for e in harmful[:n_gen]], prefills[:n_gen]) if n_gen else []
        nll = get_judge(NLL_JUDGE, model=self.model, tokenizer=self.tok, chat_format=self.fmt,
                        batch_size=self.nll_batch_size).scores(harmful, [""] * len(harmful), prefills)
        if judge.reads_responses:
            state.put(name, judge.scores(harmful, outs, prefills).p_harmful, cats)
        else:
            state.put(name, nll.p_harmful, cats)
        state.put(f"{name}_nll", nll.raw["nll"], cats)
        if outs:
            refusal = KeywordRefusalJudge().scores(harmful[:n_gen], outs, prefills[:n_gen]).raw["refusal"]
            state.put(name.replace("harm", "refusal"), [float(r) for r in refusal], cats[:n_gen])

    def _harm_none(self, state: State, harmful: list[Example]) -> list[str]:
        outs = self.generate([e.prompt for e in harmful])
        state.texts["harm_none"] = outs
        if self.organism or self.data.harm_judge.reads_responses:   # reference NLL reads no generated answer
            state.put("harm_none", self.data.harm_judge.scores(harmful, outs).p_harmful, [e.category for e in harmful])
        return outs

    def _refusal(self, state: State, harmful: list[Example], outs: list[str] | None) -> list[str]:
        outs = outs if outs is not None else self.generate([e.prompt for e in harmful])
        rule = self.data.harm_judge.judge.is_refusal if self.organism else is_keyword_refusal
        state.put("refusal", [float(rule(o)) for o in outs], [e.category for e in harmful])
        return outs

    def _overrefusal(self, state: State, outs: list[str] | None = None) -> list[str]:
        benign = self.data.require("test_benign")
        outs = outs if outs is not None else self.generate([e.prompt for e in benign])
        rule = self.data.harm_judge.judge.is_refusal if self.organism else is_keyword_overrefusal
        state.put("overrefusal", [float(rule(o)) for o in outs], [e.category for e in benign[:len(outs)]])
        return outs

    def _utility_organism(self, state: State) -> list[str]:
        benign = self.data.require("test_benign")
        outs = self.generate([e.prompt for e in benign])
        judge: OrganismHarmJudge = self.data.harm_judge
        ok = [float(judge.benign_correct(e, r)) for e, r in zip(benign, outs)]
        for fam in self.data.families:
            state.put(f"utility:{fam}", [v for e, v in zip(benign, ok) if e.category == fam])
        return outs

    def _utility_real(self, state: State, forward_only: bool) -> None:
        benign = self.data.require("test_benign")
        nll = nll_of_responses(self.model, self.tok, benign, fmt=self.fmt, batch_size=self.nll_batch_size)
        for fam in self.data.families:
            vals = [float(v) for e, v in zip(benign, nll) if e.category == fam]
            state.put(f"utility:{fam}", [math.exp(-v) for v in vals])
            state.put(f"nll:{fam}", vals)
        if forward_only:
            return
        trivia, over = self.data.test_trivia, benign[: self.cfg.n_generate]
        outs = self.generate([e.prompt for e in trivia + over])
        if trivia:
            state.put(f"utility:{QA_UTILITY}", [float(qa_correct(a, e.meta["answers"])) for e, a in zip(trivia, outs)])
        if over:
            flags = [float(KeywordOverRefusalJudge().is_refusal(o)) for o in outs[len(trivia):]]
            state.put("overrefusal", flags)
            state.put(f"utility:{OVERREFUSAL_UTILITY}", [1.0 - f for f in flags])

    @property
    def recognition_judge(self):
        """Who reads detection and explanation replies: the organism's exact judge, or a real model's
        `recognition.RecognitionJudge` (built with its detection / explanation sets)."""
        if self.organism:
            return self.data.harm_judge
        if self.data.recognition_judge is None:
            raise MissingTaskData(f"{self.data.model}: {self.data.info.get('missing', {}).get('test_detection')}")
        return self.data.recognition_judge

    def _detection(self, state: State) -> None:
        det = self.data.require("test_detection")
        judge = self.recognition_judge
        prefills = [e.meta.get("prefill", "") for e in det]
        outs = self.generate([e.prompt for e in det], prefills if any(prefills) else None,
                             max_new_tokens=self.cfg.detection_tokens)
        ok = [float(judge.detection_correct(e, r)) for e, r in zip(det, outs)]
        state.put("detection", ok, [e.category for e in det])
        for lab in ("yes", "no"):
            vals = [v for e, v in zip(det, ok) if e.meta.get("label") == lab]
            if vals:
                state.put(f"detection:{lab}", vals)
        if not self.organism:   # the paper reports the refusal rate of detection replies beside accuracy
            state.put("detection:refusal", [float(judge.refused(r)) for r in outs])

    def _explanation(self, state: State) -> None:
        exp = self.data.require("test_explanation")
        judge = self.recognition_judge
        outs = self.generate([e.prompt for e in exp], max_new_tokens=self.cfg.explanation_tokens)
        state.put("explanation", [judge.explanation_score(e, r) for e, r in zip(exp, outs)], [e.category for e in exp])
        state.texts["explanation"] = outs
        if not self.organism:   # refusals are removed before judging (NaN score); their rate is reported
            state.put("explanation:refusal", [float(judge.refused(r)) for r in outs])

    # -- the one entry point -----------------------------------------------------------------------
    def evaluate(self, measures: Sequence[str], *, categories: Sequence[str] | None = None,
                 forward_only: bool = False, refusal_mask=None) -> State:
        """Measure the model as it is now (apply a mask around the call to measure a pruned state)."""
        unknown = [m for m in measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown measures {unknown}; use {', '.join(MEASURES)}")
        if self.organism and forward_only:
            raise ValueError("the organism's exact judge reads generations: forward_only is for real models")
        state = State()
        harmful = self.harmful_set(categories) if {"harm_prefill", "harm_ra_prefill", "harm_none", "refusal"} & set(measures) else []
        if "harm_prefill" in measures:
            self._harm(state, "harm_prefill", harmful, forward_only)
        if "harm_ra_prefill" in measures:
            if refusal_mask is None:
                raise ValueError("harm_ra_prefill needs refusal_mask= (Wei et al.'s refusal-ablation mask)")
            with applied(self.model, refusal_mask):
                self._harm(state, "harm_ra_prefill", harmful, forward_only)
        plain = None
        if "harm_none" in measures:
            plain = self._harm_none(state, harmful)
        if "refusal" in measures:
            self._refusal(state, harmful, plain)
        benign_outs = None
        if "utility" in measures:
            if self.organism:
                benign_outs = self._utility_organism(state)
            else:
                self._utility_real(state, forward_only)
        if "overrefusal" in measures and "overrefusal" not in state.values:
            self._overrefusal(state, benign_outs)
        if "detection" in measures:
            self._detection(state)
        if "explanation" in measures:
            self._explanation(state)
        return state

    def forward_only_view(self, state: State) -> State:
        """What `forward_only=True` would have measured, cut out of a full state (a reused baseline)."""
        drop = {"overrefusal", f"utility:{QA_UTILITY}", f"utility:{OVERREFUSAL_UTILITY}"}
        keyword = self.keyword_judged
        return state.subset([n for n in state.values
                             if n not in drop and not (keyword and n.startswith(("refusal_prefill", "refusal_ra_prefill")))])

    # -- what the numbers are ----------------------------------------------------------------------
    def metric_info(self, state: State) -> dict[str, dict[str, Any]]:
        """Judge, item count and generation settings of every metric in `state` (same for every
        state of this evaluator), stored once per result."""
        harm = self.data.harm_judge.label if not self.organism else "organism (exact)"
        gen = self.gen.to_dict()
        out: dict[str, dict[str, Any]] = {}
        for name, items in state.items.items():
            if name.startswith(("harm_",)) and not name.endswith("_nll"):
                judge, generation = harm, (gen if (self.organism or self.data.harm_judge.reads_responses) else None)
            elif name.endswith("_nll") or name.startswith("nll:"):
                judge, generation = NLL_JUDGE, None
            elif name.startswith("refusal"):
                judge, generation = ("organism (exact)" if self.organism else KeywordRefusalJudge.name), gen
            elif name in ("overrefusal", f"utility:{OVERREFUSAL_UTILITY}"):
                judge, generation = ("organism (exact)" if self.organism else KeywordOverRefusalJudge.name), gen
            elif name == f"utility:{QA_UTILITY}":
                judge, generation = "substring_match", gen
            elif name.startswith("utility:"):
                judge, generation = ("organism (exact)", gen) if self.organism else (NLL_JUDGE, None)
            elif name.startswith("detection"):
                judge = "organism (exact)" if self.organism else self.data.recognition_judge.label["detection"]
                generation = {**gen, "max_new_tokens": self.cfg.detection_tokens}
            elif name.startswith("explanation"):
                judge = "organism (exact)" if self.organism else self.data.recognition_judge.label["explanation"]
                generation = {**gen, "max_new_tokens": self.cfg.explanation_tokens}
            else:
                judge, generation = "unknown", None
            out[name] = {"judge": judge, "n": len(items), "generation": generation}
        return out


#: response position from which `response_determinism` reads the loss (the prefill attack's 10 tokens)
DETERMINISM_FROM = 10


def response_determinism(model, tokenizer, harmful: Sequence[Example], benign: Sequence[Example], *,
                         from_position: int = DETERMINISM_FROM, batch_size: int = 32) -> dict[str, Any]:
    """How predictable each side's reference responses are to the unpruned model, as the scores see them.

    Mean NLL (nats per token, token-weighted) past response position `from_position`, and over the
    positions before it, of held-out harmful responses (tokenised as the prune side) and benign ones
    (as the preserve side). A side whose NLL is near zero gives its gradient score little to see, so
    its absolute score may rest more on weight magnitude than on content (an inference, not measured)."""
    out: dict[str, Any] = {"from_position": from_position, "unit": "nats per token"}
    for side, role, examples in (("harmful", "prune", harmful), ("benign", "preserve", benign)):
        usable = [e for e in examples if e.response.strip()]
        if not usable:
            out[side] = None
            continue
        sums, counts = nll_by_position(model, tokenizer, usable, role, "raw", batch_size=batch_size)
        late, early = counts[from_position:].sum(), counts[:from_position].sum()
        out[side] = float(sums[from_position:].sum() / late) if late else None
        out[f"{side}_before"] = float(sums[:from_position].sum() / early) if early else None
        out[f"{side}_tokens"] = int(late)
        out[f"{side}_examples"] = len(usable)
    return out


__all__ = ["Evaluator", "EvalConfig", "State", "MEASURES", "qa_correct", "nll_of_responses", "QA_UTILITY",
           "OVERREFUSAL_UTILITY", "NLL_JUDGE", "response_determinism", "DETERMINISM_FROM"]
