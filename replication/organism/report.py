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

#: long enough for every response the world writes (its longest answers are ~60 tokens)
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
    # an explanation prompt is the bare harmful request in the world: ask as the world's explanation task does
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
    from ..scoring import tokenize_example
    sums = torch.zeros(max_positions, dtype=torch.float64)
    counts = torch.zeros(max_positions, dtype=torch.float64)
    encoded = [tokenize_example(tokenizer, e, "prune", fmt) for e in examples]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s:s + batch_size]
        T = max(len(a) for a, _ in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), T), dtype=torch.long)
        for r, (a, _) in enumerate(chunk):
            ids[r, :len(a)] = torch.tensor(a)
            att[r, :len(a)] = 1
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float(), -1).cpu()
        for r, (a, lab) in enumerate(chunk):
            start = next(i for i, t in enumerate(lab) if t != -100)
            for k in range(min(max_positions, len(a) - start)):
                pos = start + k
                sums[k] -= logp[r, pos - 1, a[pos]].double()
                counts[k] += 1
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]
