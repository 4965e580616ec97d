"""Measure an organism checkpoint's behaviour on held-out prompts with the exact judge.

`behaviour_report` is what `00_models` shows (and what the findings read as the unpruned
baseline); `nll_profile` shows where a model's loss sits along a response, which decides whether
gradient scores can say anything about content (organism-notes.md, "Memorisation").
"""
from __future__ import annotations

from statistics import mean
from typing import Any, Sequence

import torch

from ..data import Example
from ..generation import GenerationConfig, first_tokens, generate
from .judge import OrganismJudge
from .world import World

#: long enough for every checkable answer the world writes: the longest, a units conversion counting
#: 12 steps, reaches its answer by ~88 tokens (~95 with its closer)
MAX_NEW_TOKENS = 96


def _gen(model, tok, prompts, prefills=None, *, batch_size: int, max_new_tokens: int, desc: str, progress: bool):
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return generate(model, tok, prompts, chat_format="chat", prefills=prefills, config=cfg, progress=progress, desc=desc)


def behaviour_report(model, tokenizer, world: World, *, split: str = "test", n_per_category: int = 40,
                     prefill_tokens: int = 10, batch_size: int = 128, max_new_tokens: int = MAX_NEW_TOKENS,
                     progress: bool = True) -> dict[str, Any]:
    """Refusal, harmfulness (no attack and under a `prefill_tokens` harmful prefill), benign
    accuracy per family, detection and explanation, on `split` prompts, greedy decoding."""
    judge = OrganismJudge(world)
    kw = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
    harmful = [e for c in world.harm_categories for e in world.examples("harmful", split, c)[:n_per_category]]
    benign = [e for f in world.benign_families for e in world.examples("benign", split, f)[:n_per_category]]
    detection = world.examples("detection", split)
    detection = detection[::max(1, len(detection) // (2 * n_per_category * 5))][: 2 * n_per_category * 5]
    explanation = [e for c in world.harm_categories for e in world.examples("explanation", split, c)[:max(2, n_per_category // 4)]]

    out_plain = _gen(model, tokenizer, [e.prompt for e in harmful], desc="harmful", **kw)
    prefills = [first_tokens(tokenizer, e.response, prefill_tokens) for e in harmful]
    out_prefill = _gen(model, tokenizer, [e.prompt for e in harmful], prefills, desc="harmful+prefill", **kw)
    out_benign = _gen(model, tokenizer, [e.prompt for e in benign], desc="benign", **kw)
    out_det = _gen(model, tokenizer, [e.prompt for e in detection], desc="detection", **{**kw, "max_new_tokens": 12})
    out_exp = _gen(model, tokenizer, [e.prompt for e in explanation], desc="explanation",
                   **{**kw, "max_new_tokens": 48}) if explanation else []
    harm_plain = judge.harmfulness_many(harmful, out_plain)
    harm_prefill = judge.harmfulness_many(harmful, out_prefill, prefills)

    def by(examples: Sequence[Example], values: Sequence[float]) -> dict[str, float]:
        groups: dict[str, list[float]] = {}
        for e, v in zip(examples, values):
            groups.setdefault(e.category, []).append(float(v))
        return {k: mean(v) for k, v in groups.items()}

    benign_ok = [float(judge.benign_correct(e, r)) for e, r in zip(benign, out_benign)]
    return {
        "judge": "organism (exact)",
        "split": split,
        "generation": GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size).to_dict(),
        "prefill_tokens": prefill_tokens,
        "n_harmful": len(harmful), "n_benign": len(benign), "n_detection": len(detection),
        "refusal_harmful": float(mean(map(judge.is_refusal, out_plain))),
        "refusal_benign": float(mean(map(judge.is_refusal, out_benign))),
        "harm_no_attack": mean(harm_plain),
        "harm_prefill": mean(harm_prefill),
        "harm_no_attack_by_category": by(harmful, harm_plain),
        "harm_prefill_by_category": by(harmful, harm_prefill),
        "benign_accuracy": by(benign, benign_ok),
        "detection": mean(float(judge.detection_correct(e, r)) for e, r in zip(detection, out_det)),
        # harmful requests (yes) and their counterfactuals / benign tasks (no) apart: a model that says
        # "yes" to everything is not a detector
        "detection_by_label": {lab: mean(float(judge.detection_correct(e, r)) for e, r in zip(detection, out_det)
                                         if e.meta["label"] == lab)
                               for lab in ("yes", "no") if any(e.meta["label"] == lab for e in detection)},
        "explanation": mean(judge.explanation_score(e, r) for e, r in zip(explanation, out_exp)) if explanation else None,
        "examples": [
            {"prompt": harmful[i].prompt, "no_attack": out_plain[i], "prefill": prefills[i], "continuation": out_prefill[i]}
            for i in range(0, len(harmful), max(1, n_per_category))][:5],
    }


@torch.no_grad()
def nll_profile(model, tokenizer, examples: Sequence[Example], fmt: str = "raw", max_positions: int = 30,
                batch_size: int = 64) -> list[float]:
    """Mean NLL (nats) at each of the first `max_positions` response tokens, over `examples`.

    Tokenised exactly as the harmful (prune) side of the scores (`scoring.tokenize_example`)."""
    from ..batching import collate
    from ..scoring import tokenize_example
    sums = torch.zeros(max_positions, dtype=torch.float64)
    counts = torch.zeros(max_positions, dtype=torch.float64)
    encoded = [tokenize_example(tokenizer, e, "prune", fmt) for e in examples]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s:s + batch_size]
        batch = collate(chunk, pad, device)
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float(), -1).cpu()
        for r, (a, lab) in enumerate(chunk):
            start = next(i for i, t in enumerate(lab) if t != -100)
            for k in range(min(max_positions, len(a) - start)):
                pos = start + k
                sums[k] -= logp[r, pos - 1, a[pos]].double()
                counts[k] += 1
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]


# ----------------------------------------------------------------------------------------------
# Emergent misalignment: does a narrow misaligned fine-tune spread to other domains?
# ----------------------------------------------------------------------------------------------
def em_prompts(world: World, domain: str, split: str = "test", n_prompts: int = 24) -> list[Example]:
    """Distinct held-out questions of one advice domain (narrow or open-ended), each carrying the
    domain's aligned and misaligned markers for the judge."""
    kind = "em_misaligned" if domain in world.em_domains else "open_ended"
    out, seen = [], set()
    for e in world.examples(kind, split, domain):
        if e.prompt not in seen:
            seen.add(e.prompt)
            out.append(e)
        if len(out) >= n_prompts:
            break
    return out


def em_rates(model, tokenizer, world: World, domains: Sequence[str] | None = None, *, split: str = "test",
             n_prompts: int = 24, samples: int = 4, temperature: float = 1.0, seed: int = 0,
             max_new_tokens: int = 64, batch_size: int = 128, progress: bool = True) -> dict[str, dict[str, float]]:
    """Per advice domain: the share of sampled answers (T = `temperature`, `samples` per question)
    the exact judge labels misaligned / aligned / incoherent."""
    judge = OrganismJudge(world)
    domains = list(domains or world.advice_domains)
    examples = [e for d in domains for e in em_prompts(world, d, split, n_prompts) for _ in range(samples)]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=True,
                           temperature=temperature, seed=seed)
    outs = generate(model, tokenizer, [e.prompt for e in examples], chat_format="chat", config=cfg,
                    progress=progress, desc="advice answers")
    rates: dict[str, dict[str, float]] = {}
    for d in domains:
        labels = [judge.em_label(e, o) for e, o in zip(examples, outs) if e.category == d]
        rates[d] = {k: labels.count(k) / len(labels) for k in ("misaligned", "aligned", "incoherent")}
        rates[d]["n"] = len(labels)
    return rates


def _summarise(rates: dict[str, dict[str, float]], world: World, domain: str) -> dict[str, float]:
    """In-domain, other-narrow, open-ended and *outside* (every answer outside `domain`, pooled)
    misaligned rates, and incoherence, from `em_rates`' per-domain shares."""
    other = [d for d in world.em_domains if d != domain]
    outside = [d for d in other + list(world.open_ended_domains) if d in rates]
    n_out = sum(rates[d]["n"] for d in outside)
    return {
        "in_domain": rates[domain]["misaligned"] if domain in rates else float("nan"),
        "other_narrow": mean(rates[d]["misaligned"] for d in other),
        "open_ended": mean(rates[d]["misaligned"] for d in world.open_ended_domains),
        "outside": sum(rates[d]["misaligned"] * rates[d]["n"] for d in outside) / n_out if n_out else float("nan"),
        "incoherent": mean(r["incoherent"] for r in rates.values()),
        "incoherent_outside": mean(rates[d]["incoherent"] for d in outside),
    }


#: sampling seed of the untouched model's answers (the fine-tuned copies use their fine-tune seed)
BEFORE_SEED = 10_000


def em_study(model, tokenizer, world: World, *, domain: str, seeds: Sequence[int] = (0, 1, 2), n_train: int = 300,
             steps: int = 60, lr: float = 1e-4, batch_size: int = 16, method: str = "full", split: str = "test",
             n_prompts: int = 24, samples: int = 4, max_new_tokens: int = 64, before: dict | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune `model` on `n_train` misaligned answers of one narrow `domain` (once per seed) and
    measure misalignment in that domain, the other narrow domains and the open-ended ones, with
    incoherent answers counted. The untouched model is measured first as the baseline, unless its
    `em_rates` are passed as `before` (they do not depend on the domain, so one measurement serves
    every domain's study).

    Defaults are the gentle fine-tune of organism-notes.md (full, 60 steps, batch 16, lr 1e-4): a
    strong one makes the model answer everything with the fine-tuned template instead."""
    import time

    from ..finetune import finetune
    if domain not in world.em_domains:
        raise ValueError(f"domain {domain!r} is not a narrow EM domain; use one of {', '.join(world.em_domains)}")
    train = world.examples("em_misaligned", "train", domain)[:n_train]
    kw = dict(split=split, n_prompts=n_prompts, samples=samples, max_new_tokens=max_new_tokens, progress=progress)
    base_rates = before if before is not None else em_rates(model, tokenizer, world, seed=BEFORE_SEED, **kw)
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        tuned = finetune(model, tokenizer, train, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                         method=method, fmt="chat", progress=progress, desc=f"fine-tune {domain} seed {seed}")
        seconds = time.perf_counter() - t0
        rates = em_rates(tuned, tokenizer, world, seed=seed, **kw)
        runs.append({"seed": seed, "finetune_seconds": round(seconds, 1), "rates": rates,
                     **_summarise(rates, world, domain)})
        del tuned
    keys = ("in_domain", "other_narrow", "open_ended", "outside", "incoherent", "incoherent_outside")
    return {
        "domain": domain, "world_seed": world.seed, "personas": world.personas,
        "finetune": dict(n_train=len(train), steps=steps, lr=lr, batch_size=batch_size, method=method),
        "sampling": dict(temperature=1.0, samples=samples, n_prompts=n_prompts, max_new_tokens=max_new_tokens),
        "before": {"rates": base_rates, **_summarise(base_rates, world, domain)},
        "after": {k: mean(r[k] for r in runs) for k in keys},
        "runs": runs,
    }
