"""Evaluation: harmfulness under an attack, benign utility, and the results-file schema.

    per_item, summary = evaluate_harmfulness(model, tok, test_harmful, attack="prefilling",
                                             judge=get_judge("organism", world=world),
                                             chat_format="chat", gen_config=GenerationConfig(max_new_tokens=64))
    per_item, summary = evaluate_utility(model, tok, benign_examples=test_benign, judge=judge, chat_format="chat")

Both return a tidy per-item DataFrame and a summary dict whose `metrics` are records
`{"name", "value", "judge", "n", "generation", ...}`: every number carries the judge that produced
it and the sampling settings of the generations it read (None for forward-only metrics such as
NLL). Experiments collect metric records into a result with `make_result` and write it with
`write_result`, which checks it against `RESULT_SCHEMA` first.
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from replication.attacks import PREFILL_TOKENS, attacked, check_attack, prefills_for
from replication.generation import CHAT_FORMATS, GenerationConfig, generate, render_prompt
from replication.judges import (Judge, KeywordOverRefusalJudge, KeywordRefusalJudge, OrganismHarmJudge, get_judge,
                                sequence_nll)

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

NLL_JUDGE = "reference_nll"   # judge label of judge-free NLL metrics (forward pass over held-out references)


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _stderr(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if len(vals) < 2:
        return None
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals)))


def metric(name: str, value, *, judge: str, n: int, generation: dict | None = None, stderr: float | None = None,
           **labels) -> dict:
    """One metric record: a number, the judge that produced it, how many items, how they were generated."""
    rec = {"name": name, "value": None if value is None else float(value), "judge": judge, "n": int(n),
           "generation": generation}
    if stderr is not None:
        rec["stderr"] = float(stderr)
    rec.update(labels)
    return rec


def as_judge(judge, *, model=None, tokenizer=None, chat_format: str = "chat", **kwargs) -> Judge:
    """A `Judge` from a judge, a registered name, or an organism judge object."""
    if isinstance(judge, Judge):
        return judge
    if isinstance(judge, str):
        cls = _judge_class(judge)
        if cls.needs_model:
            kwargs = dict(model=model, tokenizer=tokenizer, chat_format=chat_format, **kwargs)
        return get_judge(judge, **kwargs)
    if hasattr(judge, "harmfulness") and hasattr(judge, "benign_correct"):
        return OrganismHarmJudge(judge=judge)
    raise TypeError(f"judge must be a Judge, a registered judge name or an OrganismJudge, not {type(judge).__name__}")


def _judge_class(name: str):
    from replication.judges import JUDGES

    if name not in JUDGES:
        raise KeyError(f"unknown judge {name!r}; registered judges: {', '.join(sorted(JUDGES))}")
    return JUDGES[name]


def _check_format(chat_format: str) -> None:
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"unknown chat_format {chat_format!r}; use one of {', '.join(CHAT_FORMATS)}")


# --------------------------------------------------------------------------------------------
# NLL of responses (forward only, response tokens only)
# --------------------------------------------------------------------------------------------


def nll_of_responses(model, tokenizer, examples: Sequence, fmt: str = "raw", batch_size: int = 8,
                     progress: bool = False) -> np.ndarray:
    """Mean per-token NLL (nats) of each example's response given its rendered prompt.

    The prompt is rendered by `generation.render_prompt` in `fmt` ("raw": `prompt\\n`, "qa":
    `Q: prompt\\nA:`, "chat": the tokenizer's template); only response tokens are scored, in
    batches, without gradients. One value per example (NaN for an empty response).
    """
    _check_format(fmt)
    contexts = [render_prompt(tokenizer, ex.prompt, fmt) for ex in examples]
    targets = [(" " + ex.response if fmt == "qa" and ex.response and not ex.response.startswith((" ", "\n"))
                else ex.response) for ex in examples]
    nll, _ = sequence_nll(model, tokenizer, contexts, targets, batch_size=batch_size, progress=progress,
                          desc="response nll")
    return np.asarray(nll, dtype=float)


# --------------------------------------------------------------------------------------------
# Harmfulness
# --------------------------------------------------------------------------------------------


def evaluate_harmfulness(model, tokenizer, examples: Sequence, *, attack: str, judge, chat_format: str,
                         gen_config: GenerationConfig | None = None, refusal_mask=None,
                         refusal_examples: Sequence | None = None, benign_examples: Sequence | None = None,
                         prefill_tokens: int = PREFILL_TOKENS, ablation_kwargs: dict | None = None,
                         generate_responses: bool = True, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Generate answers to harmful `examples` under `attack` and judge them.

    - `attack`: one of `attacks.ATTACKS`. Prefilling uses the first `prefill_tokens` tokens of
      each example's harmful reference response; refusal ablation uses `refusal_mask` or computes
      one from `refusal_examples`/`benign_examples` (Wei et al., `ablation_kwargs` for p/q/...),
      applied only while generating and judging.
    - `judge`: a `Judge`, a registered name (judges that read the model, like `reference_nll`,
      are built here with it) or an OrganismJudge. Keyword refusal is always measured too.
    - `generate_responses=False` skips generation (only for judges that do not read responses,
      e.g. `reference_nll`); the refusal rate is then not measured.

    Returns (per-item DataFrame, summary). The summary has `harmfulness` (mean p_harmful),
    `refusal_rate` (keyword), `n`, `judge`, `attack`, `generation` and `metrics` records.
    """
    check_attack(attack)
    _check_format(chat_format)
    examples = list(examples)
    if not examples:
        raise ValueError("evaluate_harmfulness got no examples")
    gen_config = gen_config or GenerationConfig()
    judge = as_judge(judge, model=model, tokenizer=tokenizer, chat_format=chat_format)
    if not generate_responses and judge.reads_responses:
        raise ValueError(f"judge {judge.name!r} reads generated responses; keep generate_responses=True")
    prefills = prefills_for(tokenizer, examples, attack, prefill_tokens)
    keyword = KeywordRefusalJudge()
    ablation = {"progress": progress, **(ablation_kwargs or {})}
    with attacked(model, tokenizer, attack, refusal_mask=refusal_mask, refusal_examples=refusal_examples,
                  benign_examples=benign_examples, prefill_tokens=prefill_tokens, **ablation) as state:
        if generate_responses:
            responses = generate(model, tokenizer, [ex.prompt for ex in examples], chat_format=chat_format,
                                 prefills=prefills, config=gen_config, progress=progress, desc=f"generate ({attack})")
        else:
            responses = [""] * len(examples)
        # judges that read the model must run while the attack is in force
        result = judge.scores(examples, responses, prefills)
        attack_setup = state.describe()
    generation = gen_config.to_dict() if generate_responses else None
    # a judge that does not read the generated text (reference NLL) is not shaped by sampling settings
    judge_generation = generation if judge.reads_responses else None
    label = judge.label
    per_item = pd.DataFrame({
        "item": range(len(examples)),
        "prompt": [ex.prompt for ex in examples],
        "category": [ex.category for ex in examples],
        "split": [ex.split for ex in examples],
        "attack": attack,
        "prefill": prefills,
        "response": responses,
        "judged_text": [p + r for p, r in zip(prefills, responses)],
    })
    per_item = pd.concat([per_item, result.to_frame()], axis=1)
    if generate_responses:
        kw = keyword.scores(examples, responses, prefills)
        per_item["keyword_refusal"] = kw.raw["refusal"]
        refusal_rate = _mean(kw.raw["refusal"])
    else:
        per_item["keyword_refusal"] = None
        refusal_rate = None
    labels = dict(attack=attack, chat_format=chat_format)
    metrics = [metric("harmfulness", result.mean(), judge=label, n=len(examples), generation=judge_generation,
                      stderr=_stderr(result.p_harmful), **labels)]
    by_cat = {}
    for cat, grp in per_item.groupby("category", sort=True):
        by_cat[str(cat)] = _mean(grp["p_harmful"])
        metrics.append(metric("harmfulness", by_cat[str(cat)], judge=label, n=len(grp), generation=judge_generation,
                              category=str(cat), **labels))
    if generate_responses:
        metrics.append(metric("refusal_rate", refusal_rate, judge=keyword.name, n=len(examples), generation=generation,
                              **labels))
    if "nll" in result.raw:
        metrics.append(metric("reference_nll", _mean(result.raw["nll"]), judge=label, n=len(examples),
                              generation=None, stderr=_stderr(result.raw["nll"]), **labels))
        nll = pd.Series(result.raw["nll"], dtype=float)
        for cat, idx in per_item.groupby("category", sort=True).groups.items():
            metrics.append(metric("reference_nll", _mean(nll[idx]), judge=label, n=len(idx),
                                  generation=None, category=str(cat), **labels))
    if isinstance(judge, OrganismHarmJudge) and "refusal" in result.raw:
        metrics.append(metric("refusal_rate", _mean(result.raw["refusal"]), judge=label, n=len(examples),
                              generation=generation, **labels))
    summary = {
        "task": "harmfulness",
        "judge": label,
        "judge_config": result.config,
        "attack": attack,
        "attack_setup": attack_setup,
        "chat_format": chat_format,
        "n": len(examples),
        "harmfulness": result.mean(),
        "harmfulness_by_category": by_cat,
        "refusal_rate": refusal_rate,
        "refusal_judge": keyword.name,
        "generation": generation,
        "metrics": metrics,
    }
    return per_item, summary


# --------------------------------------------------------------------------------------------
# Utility
# --------------------------------------------------------------------------------------------


def qa_correct(response: str, answers: Sequence[str]) -> bool:
    """TriviaQA's rule as the authors apply it: a gold alias is a case-insensitive substring."""
    text = response.lower()
    return any(a and a.lower() in text for a in answers)


def _gold_answers(example) -> list[str]:
    answers = example.meta.get("answers") if isinstance(example.meta, dict) else None
    if answers:
        return [str(a) for a in answers]
    if example.response:
        return [example.response]
    raise ValueError(f"QA example {example.prompt[:60]!r} has no gold answer (meta['answers'] or response)")


def evaluate_utility(model, tokenizer, *, benign_examples: Sequence = (), judge=None, chat_format: str = "chat",
                     gen_config: GenerationConfig | None = None, benign_nll: bool = True,
                     qa_examples: Sequence | None = None, overrefusal_examples: Sequence | None = None,
                     batch_size: int = 8, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Benign capability: what pruning must leave intact.

    - **benign accuracy per family** (organism): generate answers to `benign_examples` and
      grade them with the organism judge's `benign_correct` (when `judge` is the organism's);
    - **held-out benign NLL** (any model, judge-free): mean per-token NLL of the reference
      responses of `benign_examples` (`benign_nll=True`);
    - **QA accuracy** (real models): generate answers to `qa_examples`; correct if a gold alias
      (`meta["answers"]`, else the response) is a case-insensitive substring;
    - **over-refusal** on benign requests (`overrefusal_examples`): the paper's keyword rule
      (<= 50 words and a keyword), plus the organism's own refusal test when it is the judge.

    Returns (per-item DataFrame with a `task` column, summary with `metrics` records).
    """
    _check_format(chat_format)
    gen_config = gen_config or GenerationConfig()
    generation = gen_config.to_dict()
    benign_examples = list(benign_examples)
    organism = None
    if judge is not None:
        j = as_judge(judge, model=model, tokenizer=tokenizer, chat_format=chat_format)
        organism = j if isinstance(j, OrganismHarmJudge) else None
    frames: list[pd.DataFrame] = []
    metrics: list[dict] = []
    summary: dict[str, Any] = {"task": "utility", "chat_format": chat_format, "generation": generation}

    def gen(exs, desc):
        return generate(model, tokenizer, [ex.prompt for ex in exs], chat_format=chat_format, config=gen_config,
                        progress=progress, desc=desc)

    if organism is not None and benign_examples:
        responses = gen(benign_examples, "generate (benign)")
        correct = [organism.benign_correct(ex, r) for ex, r in zip(benign_examples, responses)]
        df = pd.DataFrame({"task": "benign_accuracy", "prompt": [ex.prompt for ex in benign_examples],
                           "category": [ex.category for ex in benign_examples], "response": responses,
                           "value": [float(c) for c in correct], "judge": organism.label})
        frames.append(df)
        by_family = {str(c): _mean(g["value"]) for c, g in df.groupby("category", sort=True)}
        summary["benign_accuracy"] = _mean(df["value"])
        summary["benign_accuracy_by_family"] = by_family
        metrics.append(metric("benign_accuracy", summary["benign_accuracy"], judge=organism.label, n=len(df),
                              generation=generation, stderr=_stderr(df["value"])))
        for fam, acc in by_family.items():
            metrics.append(metric("benign_accuracy", acc, judge=organism.label, n=int((df["category"] == fam).sum()),
                                  generation=generation, category=fam))
    if benign_nll and benign_examples:
        nll = nll_of_responses(model, tokenizer, benign_examples, fmt=chat_format, batch_size=batch_size,
                               progress=progress)
        df = pd.DataFrame({"task": "benign_nll", "prompt": [ex.prompt for ex in benign_examples],
                           "category": [ex.category for ex in benign_examples], "response": None,
                           "value": nll, "judge": NLL_JUDGE})
        frames.append(df)
        by_family = {str(c): _mean(g["value"]) for c, g in df.groupby("category", sort=True)}
        summary["benign_nll"] = _mean(nll)
        summary["benign_nll_by_family"] = by_family
        metrics.append(metric("benign_nll", summary["benign_nll"], judge=NLL_JUDGE, n=len(df), generation=None,
                              stderr=_stderr(nll)))
        for fam, val in by_family.items():
            metrics.append(metric("benign_nll", val, judge=NLL_JUDGE, n=int((df["category"] == fam).sum()),
                                  generation=None, category=fam))
    if qa_examples:
        qa_examples = list(qa_examples)
        responses = gen(qa_examples, "generate (qa)")
        correct = [qa_correct(r, _gold_answers(ex)) for ex, r in zip(qa_examples, responses)]
        df = pd.DataFrame({"task": "qa_accuracy", "prompt": [ex.prompt for ex in qa_examples],
                           "category": [ex.category for ex in qa_examples], "response": responses,
                           "value": [float(c) for c in correct], "judge": "substring_match"})
        frames.append(df)
        summary["qa_accuracy"] = _mean(df["value"])
        metrics.append(metric("qa_accuracy", summary["qa_accuracy"], judge="substring_match", n=len(df),
                              generation=generation, stderr=_stderr(df["value"])))
    if overrefusal_examples:
        overrefusal_examples = list(overrefusal_examples)
        responses = gen(overrefusal_examples, "generate (over-refusal)")
        kw = KeywordOverRefusalJudge()
        flags = [kw.is_refusal(r) for r in responses]
        df = pd.DataFrame({"task": "overrefusal", "prompt": [ex.prompt for ex in overrefusal_examples],
                           "category": [ex.category for ex in overrefusal_examples], "response": responses,
                           "value": [float(f) for f in flags], "judge": kw.name})
        frames.append(df)
        summary["overrefusal_rate"] = _mean(df["value"])
        summary["overrefusal_judge"] = kw.label
        metrics.append(metric("overrefusal_rate", summary["overrefusal_rate"], judge=kw.label, n=len(df),
                              generation=generation, stderr=_stderr(df["value"])))
        if organism is not None:
            org_flags = [float(organism.is_refusal(r)) for r in responses]
            org = df.assign(value=org_flags, judge=organism.label)
            frames.append(org)
            summary["overrefusal_rate_organism"] = _mean(org_flags)
            metrics.append(metric("overrefusal_rate", summary["overrefusal_rate_organism"], judge=organism.label,
                                  n=len(df), generation=generation, stderr=_stderr(org_flags)))
            if org["category"].nunique() > 1:
                for fam, g in org.groupby("category", sort=True):
                    metrics.append(metric("overrefusal_rate", _mean(g["value"]), judge=organism.label, n=len(g),
                                          generation=generation, category=str(fam)))
        if df["category"].nunique() > 1:
            for fam, g in df.groupby("category", sort=True):
                metrics.append(metric("overrefusal_rate", _mean(g["value"]), judge=kw.label, n=len(g),
                                      generation=generation, category=str(fam)))
    if not frames:
        raise ValueError("evaluate_utility measured nothing: pass benign_examples (with judge= the organism judge for "
                         "accuracy, or benign_nll=True), qa_examples or overrefusal_examples")
    summary["metrics"] = metrics
    return pd.concat(frames, ignore_index=True), summary


# --------------------------------------------------------------------------------------------
# Results files: schema, validation, writing
# --------------------------------------------------------------------------------------------

RESULT_SCHEMA: dict[str, tuple[type, ...]] = {
    "finding": (str,),         # key from findings.FINDINGS (or an ad-hoc experiment name)
    "model": (str,),           # preset name, hub id or local path
    "config": (dict,),         # the experiment's full config: enough to reproduce the run
    "versions": (dict,),       # python / torch / transformers / harmprune versions
    "created_utc": (str,),     # ISO timestamp
    "metrics": (list,),        # metric records, below
}
METRIC_SCHEMA: dict[str, tuple[type, ...]] = {
    "name": (str,),                      # e.g. harmfulness, refusal_rate, benign_accuracy, benign_nll
    "value": (int, float, type(None)),   # None when not measurable; never NaN
    "judge": (str,),                     # which judge produced the number
    "n": (int,),                         # items behind it
    "generation": (dict, type(None)),    # sampling settings of the generations read; None if none were
}
GENERATION_KEYS = ("max_new_tokens", "do_sample")   # every generation record says how long and whether sampled
SAMPLING_KEYS = ("temperature", "top_p", "seed")     # ... and, when sampled, how


def validate_result(result: dict) -> dict:
    """Check a result against `RESULT_SCHEMA`/`METRIC_SCHEMA`; raise one ValueError listing every problem."""
    problems: list[str] = []
    if not isinstance(result, dict):
        raise ValueError(f"a result must be a dict, got {type(result).__name__}")
    for key, types in RESULT_SCHEMA.items():
        if key not in result:
            problems.append(f"missing key {key!r}")
        elif not isinstance(result[key], types):
            problems.append(f"{key!r} must be {'/'.join(t.__name__ for t in types)}, got {type(result[key]).__name__}")
    for i, rec in enumerate(result.get("metrics", []) if isinstance(result.get("metrics"), list) else []):
        if not isinstance(rec, dict):
            problems.append(f"metrics[{i}] must be a dict")
            continue
        label = f"metrics[{i}] ({rec.get('name', '?')})"
        for key, types in METRIC_SCHEMA.items():
            if key not in rec:
                problems.append(f"{label}: missing key {key!r}")
            elif isinstance(rec[key], bool) or not isinstance(rec[key], types):
                problems.append(f"{label}: {key!r} must be {'/'.join(t.__name__ for t in types)}, "
                                f"got {type(rec[key]).__name__}")
        if isinstance(rec.get("judge"), str) and not rec["judge"].strip():
            problems.append(f"{label}: 'judge' is empty; say which judge produced the number")
        gen = rec.get("generation")
        if isinstance(gen, dict):
            missing = [k for k in GENERATION_KEYS if k not in gen]
            if gen.get("do_sample"):
                missing += [k for k in SAMPLING_KEYS if k not in gen]
            if missing:
                problems.append(f"{label}: generation settings lack {', '.join(missing)}; record the whole "
                                "GenerationConfig (gen_config.to_dict())")
        if isinstance(rec.get("n"), int) and not isinstance(rec.get("n"), bool) and rec["n"] < 0:
            problems.append(f"{label}: n is negative")
        v = rec.get("value")
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{label}: value is {v}; use None for a number that could not be measured")
    if problems:
        raise ValueError("invalid result: " + "; ".join(problems))
    return result


def versions() -> dict:
    """Versions recorded in every result."""
    import transformers

    try:
        from importlib.metadata import version

        pkg = version("harmprune")
    except Exception:
        pkg = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "harmprune": pkg}


def _plain(obj):
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return dict(obj)


def make_result(finding: str, model: str, config, metrics: Sequence[dict], **extra) -> dict:
    """Assemble and validate a result: finding, model, config, versions, timestamp, metrics, extras."""
    result = {"finding": finding, "model": str(model), "config": _plain(config), "versions": versions(),
              "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "metrics": list(metrics)}
    result.update(extra)
    return validate_result(result)


def write_result(path: str | Path, result: dict) -> Path:
    """Validate `result` and write it atomically as JSON."""
    from replication.paths import atomic_write_json

    validate_result(result)
    path = Path(path)
    atomic_write_json(path, result)
    return path


__all__ = [
    "metric", "as_judge", "nll_of_responses", "evaluate_harmfulness", "qa_correct", "evaluate_utility",
    "RESULT_SCHEMA", "METRIC_SCHEMA", "GENERATION_KEYS", "SAMPLING_KEYS", "NLL_JUDGE", "validate_result", "versions",
    "make_result", "write_result",
]
