"""Attacks that elicit harmful generation before it is measured (paper.md §3.5, §4.1).

An aligned model refuses almost everything, so "can it still generate harm" is measured under
an attack that gets past the refusal:

| attack                        | what it does                                                              |
|-------------------------------|---------------------------------------------------------------------------|
| `none`                        | the plain prompt                                                          |
| `prefilling`                  | the assistant turn starts with the first 10 tokens of a harmful response  |
| `refusal_ablation`            | Wei et al.'s set difference removes the refusal weights (p = q = 0.01)    |
| `refusal_ablation_prefilling` | both                                                                      |

Refusal ablation is the authors' `pruning_attack`: absolute SNIP scores on both sides (the
model's own refusals to prune, benign Alpaca-like data to preserve), 128 samples each, raw
format, not negated; per weight matrix prune top-q(refusal) minus top-p(benign). It is computed
on the model under evaluation (a B-TAP-pruned model gets its own refusal mask) and always
restored afterwards:

    with attacked(model, tok, "refusal_ablation_prefilling", refusal_examples=refusals,
                  benign_examples=benign) as state:
        prefills = [prefill_for(tok, ex) for ex in harmful] if state.prefill else None
        ...
"""
from __future__ import annotations

import contextlib
import inspect
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

ATTACKS = ("none", "prefilling", "refusal_ablation", "refusal_ablation_prefilling")
PREFILL_TOKENS = 10          # the paper's prefill length
ABLATION_P = 0.01            # Wei et al.'s refusal-ablation budgets as the authors call them
ABLATION_Q = 0.01
ABLATION_NSAMPLES = 128


def check_attack(attack: str) -> str:
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}")
    return attack


def uses_prefill(attack: str) -> bool:
    return check_attack(attack) in ("prefilling", "refusal_ablation_prefilling")


def uses_refusal_ablation(attack: str) -> bool:
    return check_attack(attack) in ("refusal_ablation", "refusal_ablation_prefilling")


def prefill_for(tokenizer, example, n_tokens: int = PREFILL_TOKENS) -> str:
    """The first `n_tokens` tokens of `example.response` (a harmful response), decoded.

    Tokenised without special tokens and decoded, as the authors build their prefixes. The
    generated continuation follows this text, and judges see prefill + continuation.
    """
    if n_tokens < 1:
        raise ValueError(f"a prefill needs at least one token, got n_tokens={n_tokens}")
    if not example.response:
        raise ValueError(f"prefilling needs a harmful reference response; example {example.prompt[:60]!r} has none")
    ids = tokenizer(example.response, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


def prefills_for(tokenizer, examples: Sequence, attack: str, n_tokens: int = PREFILL_TOKENS) -> list[str]:
    """Per-example prefills for `attack` ("" for every example when the attack does not prefill)."""
    if not uses_prefill(attack):
        return [""] * len(examples)
    return [prefill_for(tokenizer, ex, n_tokens) for ex in examples]


def _sample(examples: Sequence, n: int, seed: int) -> list:
    """All examples in order if n >= len (as the authors); else a seeded sample of n, in order."""
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


WEI_SET_DIFFERENCE = "wei_set_difference"   # the function replication.pruning must provide


def wei_set_difference_fn():
    """`replication.pruning.wei_set_difference`, imported lazily (pruning is its own module).

    Its signature: `wei_set_difference(model, tokenizer, refusal_examples, benign_examples, *, p,
    q, fmt, batch_size, progress) -> Mask`: absolute SNIP on both sides, per weight matrix
    top-q(refusal) minus top-p(benign), the Mask not yet applied.
    """
    try:
        from replication import pruning
    except ImportError as err:
        raise RuntimeError(f"refusal ablation needs replication.pruning ({err}); it provides Wei et al.'s set "
                           "difference. Pass a precomputed refusal_mask= instead, or use attack 'none'/'prefilling'"
                           ) from None
    fn = getattr(pruning, WEI_SET_DIFFERENCE, None)
    if fn is None:
        raise RuntimeError(f"replication.pruning has no {WEI_SET_DIFFERENCE}(model, tokenizer, refusal_examples, "
                           "benign_examples, *, p, q, ...); "
                           "refusal ablation needs it. Pass a precomputed refusal_mask= instead")
    return fn


def refusal_ablation(model, tokenizer, refusal_examples: Sequence, benign_examples: Sequence, *, p: float = ABLATION_P,
                     q: float = ABLATION_Q, nsamples: int = ABLATION_NSAMPLES, fmt: str = "raw", seed: int = 0,
                     batch_size: int = 8, progress: bool = True):
    """Wei et al.'s refusal-removing mask: top-q |SNIP| on refusals minus top-p |SNIP| on benign data.

    `refusal_examples` are harmful requests answered with refusals (the model's own, ideally),
    scored as prune data (`prompt\\n` + refusal); `benign_examples` the preserve set (`prompt` +
    `\\nresponse`), as the authors' `pruning_attack` does. `nsamples` of each (all, in order, when
    there are fewer). Returns a `mask.Mask` (not applied).
    """
    if not refusal_examples or not benign_examples:
        raise ValueError("refusal ablation needs refusal examples (harmful requests answered with refusals) and benign "
                         "examples; pass refusal_examples= and benign_examples=, or a precomputed refusal_mask=")
    set_difference = wei_set_difference_fn()
    refusal = _sample(refusal_examples, nsamples, seed)
    benign = _sample(benign_examples, nsamples, seed)
    return set_difference(model, tokenizer, refusal, benign, p=p, q=q, fmt=fmt, batch_size=batch_size,
                          progress=progress)


@contextlib.contextmanager
def mask_applied(mask, model) -> Iterator[None]:
    """Apply `mask` to `model` for the block and restore the weights afterwards, even on error.

    Works with `mask.Mask` (`apply(model)` returns a handle whose `restore()` undoes it) and
    with any mask that offers `applied(model)` (a context manager) or `apply(model)` and
    `restore(model[, handle])` (`handle` being what `apply` returned).
    """
    if hasattr(mask, "applied"):
        with mask.applied(model):
            yield
        return
    if not (hasattr(mask, "apply") and hasattr(mask, "restore")):
        raise TypeError(f"a refusal mask needs apply(model)/restore(model) or applied(model); got {type(mask).__name__}")
    handle = mask.apply(model)
    try:
        yield
    finally:
        _restore(mask, model, handle)


def _restore(mask, model, handle) -> None:
    if callable(getattr(handle, "restore", None)):   # pruning.Mask.apply returns an AppliedMask handle
        handle.restore()
        return
    try:
        n_params = len(inspect.signature(mask.restore).parameters)
    except (TypeError, ValueError):
        n_params = 1
    if n_params >= 2:
        mask.restore(model, handle)
    else:
        mask.restore(model)


@dataclass
class AttackState:
    """What `attacked` set up: the attack, whether to prefill, the refusal mask in force."""

    attack: str
    prefill: bool
    mask: Any = None
    prefill_tokens: int = PREFILL_TOKENS
    ablation: dict | None = None     # p, q, nsamples, fmt, seed of the refusal ablation, or "precomputed"

    def describe(self) -> dict:
        """JSON-ready description of the attack, recorded next to the numbers it produced."""
        d: dict[str, Any] = {"attack": self.attack, "prefill_tokens": self.prefill_tokens if self.prefill else 0}
        if self.mask is not None:
            d["refusal_ablation"] = {**(self.ablation or {}), **_mask_summary(self.mask)}
        return d


def _mask_summary(mask) -> dict:
    """Whatever JSON-ready facts a mask offers about itself (counts, config)."""
    import json
    from dataclasses import asdict, is_dataclass

    out: dict[str, Any] = {}
    for key in ("count", "n_pruned", "num_pruned", "config", "meta"):
        val = getattr(mask, key, None)
        if val is None:
            continue
        if callable(val):
            try:
                val = val()
            except TypeError:
                continue
        if hasattr(val, "to_dict"):
            val = val.to_dict()
        elif is_dataclass(val) and not isinstance(val, type):
            val = asdict(val)
        try:
            json.dumps(val)
        except TypeError:
            val = repr(val)
        out[key] = val
    return out


@contextlib.contextmanager
def attacked(model, tokenizer, attack: str, *, refusal_mask=None, refusal_examples: Sequence | None = None,
             benign_examples: Sequence | None = None, p: float = ABLATION_P, q: float = ABLATION_Q,
             nsamples: int = ABLATION_NSAMPLES, fmt: str = "raw", seed: int = 0, batch_size: int = 8,
             progress: bool = True, prefill_tokens: int = PREFILL_TOKENS) -> Iterator[AttackState]:
    """Apply `attack` to `model` for the duration of the block and restore it afterwards.

    Refusal-ablation attacks use `refusal_mask` if given (compute it once with
    `refusal_ablation` and reuse it across evaluations of the same model), else compute it from
    `refusal_examples` and `benign_examples`. The weights are restored on exit, even on error.
    """
    check_attack(attack)
    state = AttackState(attack=attack, prefill=uses_prefill(attack), prefill_tokens=int(prefill_tokens))
    if not uses_refusal_ablation(attack):
        yield state
        return
    mask = refusal_mask
    if mask is not None:
        state.ablation = {"method": "wei_set_difference", "mask": "precomputed (refusal_mask=)"}
    else:
        state.ablation = {"method": "wei_set_difference", "p": p, "q": q, "nsamples": nsamples, "fmt": fmt,
                          "seed": seed, "score": "abs SNIP on both sides"}
        mask = refusal_ablation(model, tokenizer, refusal_examples or [], benign_examples or [], p=p, q=q,
                                nsamples=nsamples, fmt=fmt, seed=seed, batch_size=batch_size, progress=progress)
    state.mask = mask
    if hasattr(mask, "realised_fraction"):
        try:
            state.ablation["fraction_of_all_params"] = float(mask.realised_fraction(model))
        except Exception:   # a mask for another model fails loudly when applied, just below
            pass
    with mask_applied(mask, model):
        yield state


__all__ = [
    "ATTACKS", "PREFILL_TOKENS", "ABLATION_P", "ABLATION_Q", "ABLATION_NSAMPLES", "check_attack", "uses_prefill",
    "uses_refusal_ablation", "prefill_for", "prefills_for", "wei_set_difference_fn", "refusal_ablation",
    "mask_applied", "AttackState", "attacked",
]
