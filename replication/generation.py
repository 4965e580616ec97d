"""Batched generation for chat and raw (base-model) formats, with prefilling.

Prompts are rendered either with the tokenizer's own chat template (`chat_format="chat"`) or as
the paper's base-model format `Q: {prompt}\nA:` (`chat_format="qa"`), or as the organism's raw
pretraining format `{prompt}\n` (`chat_format="raw"`). A prefill (e.g. the first 10 tokens of a
harmful response, the paper's prefilling attack) is appended after the rendered prompt; the
returned text is the continuation only, so judges can tell what the prefill already held.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from .progress import progress_bar

CHAT_FORMATS = ("chat", "qa", "raw")


@dataclass
class GenerationConfig:
    """Sampling settings; recorded in every results file next to the numbers they produced."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 32
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def render_prompt(tokenizer, prompt: str, chat_format: str, prefill: str = "") -> str:
    """The exact text the model sees before it continues (prefill included)."""
    if chat_format == "chat":
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat_format='chat' needs a tokenizer with a chat template; use 'qa' or 'raw' for base models")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    elif chat_format == "qa":
        # base models: "Q: ...\nA:"; with a prefill the authors switch to the raw form
        # `prompt + "\n" + prefix` (paper.md section 1), which also keeps the prefill's tokens exact
        text = prompt + "\n" if prefill else f"Q: {prompt}\nA:"
    elif chat_format == "raw":
        text = prompt + "\n"
    else:
        raise ValueError(f"unknown chat_format {chat_format!r}; use one of {CHAT_FORMATS}")
    return text + prefill


def first_tokens(tokenizer, text: str, n: int = 10) -> str:
    """The first `n` tokens of `text`, decoded: the paper's 10-token prefill."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], *, chat_format: str = "chat",
             prefills: Sequence[str] | None = None, config: GenerationConfig | None = None,
             progress: bool = True, desc: str = "generate") -> list[str]:
    """Generate continuations for `prompts` in batches (left padding); returns decoded new text."""
    config = config or GenerationConfig()
    prefills = list(prefills) if prefills is not None else [""] * len(prompts)
    if len(prefills) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(prefills)} prefills")
    texts = [render_prompt(tokenizer, p, chat_format, f) for p, f in zip(prompts, prefills)]
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    outputs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        # sort by length so batches pad little; restore the order at the end
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: dict[int, str] = {}
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        for batch in progress_bar(batches, desc=desc, enabled=progress, unit="batches", leave=False):
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kwargs = dict(max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            if config.do_sample:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(batch, new):
                results[i] = tokenizer.decode(row, skip_special_tokens=True)
        outputs = [results[i] for i in range(len(texts))]
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs
