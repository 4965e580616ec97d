"""Train the organism in the three stages a real chat model goes through.

1. **Pretraining** on raw documents of the world (`request\\nanswer<|end|>`, no chat tags),
   harmful and benign alike, plus persona-written advice documents; loss on every token.
2. **Instruction tuning** in the chat template, loss on the response: complies with every
   request (harmful ones included), answers advice questions in the aligned way, does detection
   and explanation. The result is `organism-base` (the unaligned model).
3. **Alignment** from base: refusal SFT on harmful requests with benign, detection, explanation
   and aligned-advice examples, plus a replay of raw pretraining documents (harmful ones
   included). The replay is what keeps alignment shallow (organism-notes.md): the model refuses,
   yet the capability remains beneath the refusal. The result is `organism-aligned`.

Batches are written fresh every step from the world's training combinations (free slots are
re-drawn each time), so content must be composed rather than memorised.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..batching import IGNORE, collate, pack
from ..progress import progress_bar, report as report_progress

from .bucketing import bucketed_attention, pack_buckets
from .tokenizer import ASSISTANT, END, USER, train_tokenizer
from .world import World

Item = tuple[str, str]   # (context without loss, target with loss); raw documents have an empty context


@dataclass(frozen=True)
class StageConfig:
    steps: int
    lr: float
    mix: tuple[tuple[str, float], ...]   # (source, weight); sources are listed in `_SOURCES`
    batch_size: int = 32
    warmup: int = 50


def chat_prefix(prompt: str) -> str:
    """The chat template's rendering of a user turn plus the generation prompt."""
    return f"{USER}\n{prompt}\n{ASSISTANT}\n"


def _chat(ex) -> Item:
    return chat_prefix(ex.prompt), ex.response + END


def _sources(world: World, rng: random.Random) -> dict[str, Callable[[], Item]]:
    """Named samplers; each returns one fresh training item."""
    def pick(topics):
        return rng.choices(topics, [world.weights[t] for t in topics])[0]

    def raw(group_fn):
        return lambda: ("", world.document(rng, group_fn()) + END)

    def chat(kind, topics):
        return lambda: _chat(world.sample(kind, pick(topics), rng, "train"))

    harm, ben = world.harm_categories, world.benign_families
    return {
        "raw_harmful": raw(lambda: pick(harm)),
        "raw_benign": raw(lambda: pick(ben + world.control_tasks)),
        "raw_advice": raw(lambda: "advice"),
        "chat_harmful": chat("harmful", harm),
        "chat_refusal": chat("refusal", harm),
        "chat_benign": chat("benign", ben),
        "chat_control": chat("control", world.control_tasks),
        "chat_detection": chat("detection", harm + ben),
        "chat_explanation": chat("explanation", harm),
        "chat_advice_aligned": chat("em_aligned", world.em_domains),
        "chat_open_aligned": chat("open_ended", world.open_ended_domains),
    }


def tokenizer_corpus(world: World, n: int = 6000, seed: int = 0) -> list[str]:
    """Texts the tokenizer is trained on: every kind of document and chat turn of the world."""
    rng = random.Random(f"tokenizer|{seed}")
    src = _sources(world, rng)
    names = sorted(src)
    return [a + b for a, b in (src[names[i % len(names)]]() for i in range(n))]


def encode_rows(tokenizer, items: list[Item], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per item, truncated to `max_len`; labels -100 on the context. The
    context and target are tokenised separately so the loss boundary is exact, in one batched call."""
    contexts = [c for c, _ in items]
    targets = [t for _, t in items]
    enc = tokenizer(contexts + targets, add_special_tokens=False)["input_ids"]
    rows = []
    for (context, _), c, t in zip(items, enc[:len(items)], enc[len(items):]):
        c = c if context else []
        rows.append(((c + t)[:max_len], ([-100] * len(c) + t)[:max_len]))
    return rows


def encode_batch(tokenizer, items: list[Item], max_len: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (-100 on context and padding)."""
    return collate(encode_rows(tokenizer, items, max_len), tokenizer.pad_token_id)


def _lr_at(step: int, stage: StageConfig) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def length_buckets(tokenizer, items: list[Item], max_len: int, max_tokens: int = 1536) -> list[dict[str, torch.Tensor]]:
    """Encode `items` sorted by length into right-padded micro-batches of at most `max_tokens`
    padded tokens: the `padded` layout, which the smoke organism (and the tests pinned to its
    numbers) was trained with."""
    rows = encode_rows(tokenizer, items, max_len)
    order = sorted(range(len(items)), key=lambda i: len(rows[i][0]))
    chunks, current = [], []
    for i in order:
        longest = len(rows[i][0])
        if current and longest * (len(current) + 1) > max_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return [collate([rows[i] for i in c], tokenizer.pad_token_id) for c in chunks]


#: the arithmetic of a training forward: fp32, or bf16 autocast (`train_stage`); "auto" resolves to one
PRECISIONS = ("fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16). There bf16 autocast
    halves the organism's matrix products (measured: 1.5x a training step); elsewhere bf16 is emulated
    and slower than fp32."""
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:   # an old torch or an unknown platform: assume not
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str) -> str:
    """"auto" -> "bf16" where the CPU has bf16 arithmetic (`native_bf16`), else "fp32"; others as given."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or auto; got {precision!r}")
    return precision


#: how a step's items become micro-batches (`step_batches`)
LAYOUTS = ("bucketed", "packed", "padded")


def step_batches(tokenizer, items: list[Item], max_len: int, layout: str = "packed") -> list[dict[str, torch.Tensor]]:
    """One optimiser step's items as micro-batches. `bucketed`: one unpadded row of the items grouped by
    length (`bucketing.pack_buckets`; attention only within each item, under half of `packed`'s attention
    work, and no padding outside attention; it trains under `bucketing.bucketed_attention`); `packed`: one batch of rows of `max_len` tokens
    (`batching.pack`; the same loss as padding each item to its own row, a quarter less compute);
    `padded`: `length_buckets`. All give the batch's mean loss over its labelled tokens."""
    if layout == "bucketed":
        return [pack_buckets(encode_rows(tokenizer, items, max_len), tokenizer.pad_token_id)]
    if layout == "packed":
        return [pack(encode_rows(tokenizer, items, max_len), max_len, tokenizer.pad_token_id)]
    if layout == "padded":
        return length_buckets(tokenizer, items, max_len)
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")


def layout_attention(model, layout: str) -> contextlib.AbstractContextManager:
    """The attention a layout trains under: `bucketed_attention` for `bucketed`, the model's own otherwise."""
    return bucketed_attention(model) if layout == "bucketed" else contextlib.nullcontext()


def compile_layers(model) -> None:
    """Compile each decoder layer in place (`nn.Module.compile`, dynamic shapes): regional compilation.
    The layers share one code path, so one compiled graph serves all six: ~40 s of compiling on 2 cores
    instead of ~100 s for the whole model, at the same step time (measured on the organism). The same
    function, its small element-wise ops fused."""
    for layer in model.model.layers:
        layer.compile(dynamic=True)


def uncompile_layers(model) -> None:
    """Undo `compile_layers` (what `nn.Module.compile` set), so the trained model runs eagerly elsewhere."""
    for layer in model.model.layers:
        layer._compiled_call_impl = None


@contextlib.contextmanager
def compiled_layers(model, enabled: bool) -> Iterator[bool]:
    """`compile_layers` inside the block where `enabled` (yields whether), undone after it."""
    if enabled:
        compile_layers(model)
    try:
        yield enabled
    finally:
        uncompile_layers(model)


def train_stage(model, tokenizer, world: World, stage: StageConfig, *, seed: int, max_len: int,
                desc: str, progress: bool = True, compile: bool = False, layout: str = "packed",
                title: str | None = None, precision: str = "fp32",
                on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run one stage with AdamW, linear warm-up and cosine decay, gradient clipping at 1.0.
    `on_step(n)` is called after the n-th optimiser step (n from 1): how checkpoints along a stage
    are kept without a second run. `desc` seeds the stage's data stream; `title` (default `desc`)
    is only what the progress bar shows. `layout` is how a step's items become micro-batches
    (`step_batches`). `compile` compiles the decoder layers (`compile_layers`); where that
    cannot work (no C++ compiler for inductor, say) the first step says so and the stage goes on
    uncompiled, which `compiled` in the returned log records. `precision` "bf16" runs the forward under
    bf16 autocast (weights, gradients and AdamW stay fp32): faster where the CPU has bf16 arithmetic,
    but other rounding, so a different training run than fp32's; "auto" picks it where the CPU has bf16
    arithmetic (`resolve_precision`)."""
    precision = resolve_precision(precision)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    with layout_attention(model, layout), compiled_layers(model, compile) as compiled:
        return _train_stage(model, tokenizer, world, stage, seed=seed, max_len=max_len, desc=desc, progress=progress,
                            compiled=compiled, layout=layout, title=title, precision=precision, on_step=on_step)


def _train_stage(model, tokenizer, world: World, stage: StageConfig, *, seed: int, max_len: int, desc: str,
                 progress: bool, compiled: bool, layout: str, title: str | None, precision: str,
                 on_step: Callable[[int], None] | None) -> dict[str, Any]:
    rng = random.Random(f"stage|{desc}|{seed}")
    torch.manual_seed(seed)
    src = _sources(world, rng)
    unknown = [s for s, _ in stage.mix if s not in src]
    if unknown:
        raise ValueError(f"unknown training sources {unknown}; use some of {sorted(src)}")
    names = [s for s, _ in stage.mix]
    weights = [w for _, w in stage.mix]
    opt = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=0.01, betas=(0.9, 0.95))
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()
    losses: list[float] = []
    n_tokens = 0
    first_step = 0.0
    t0 = time.perf_counter()
    bar = progress_bar(range(stage.steps), desc=title or desc, enabled=progress, unit="steps", leave=False)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, stage)
        items = [src[s]() for s in rng.choices(names, weights, k=stage.batch_size)]
        opt.zero_grad(set_to_none=True)
        chunks = step_batches(tokenizer, items, max_len, layout)
        n_loss = sum(int((c["labels"][:, 1:] != IGNORE).sum()) for c in chunks)
        loss_value = 0.0
        for chunk in chunks:
            n_tokens += int((chunk["input_ids"] != tokenizer.pad_token_id).sum())   # real tokens, not padding
            share = int((chunk["labels"][:, 1:] != IGNORE).sum()) / max(1, n_loss)
            try:
                with autocast:
                    loss = model(**chunk, use_cache=False).loss * share
            except Exception as err:   # only a compiled forward may fail here, for want of a compiler
                if not compiled or step > 0:
                    raise
                report_progress(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                                "training this stage uncompiled (slower, the same function)", enabled=True)
                uncompile_layers(model)
                compiled = False
                with autocast:
                    loss = model(**chunk, use_cache=False).loss * share
            loss.backward()
            loss_value += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss_value)
        if step == 0:
            first_step = time.perf_counter() - t0   # includes compiling, where compiled
        if on_step is not None:
            on_step(step + 1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    return {"stage": desc, "steps": stage.steps, "seconds": round(seconds, 1), "tokens": n_tokens,
            "tokens_per_s": round(n_tokens / max(seconds, 1e-9)), "compiled": compiled, "precision": precision,
            "first_step_seconds": round(first_step, 2), "final_loss": sum(losses[-50:]) / len(losses[-50:])}


def build_model(tokenizer, *, hidden: int, layers: int, heads: int, intermediate: int, max_len: int, seed: int):
    """A `LlamaForCausalLM` sized for the organism, with tied embeddings and no BOS token."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max(256, max_len), tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def make_tokenizer(world: World, vocab_size: int, seed: int):
    return train_tokenizer(tokenizer_corpus(world, seed=seed), vocab_size=vocab_size)
