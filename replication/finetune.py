"""Narrow supervised fine-tuning (full or LoRA): the emergent-misalignment fine-tune and the
fine-tuning attack.

`finetune(model, tokenizer, examples, steps=..., lr=..., ...)` trains on the responses of
`examples` (loss on the response tokens only, the prompt masked out), in the chat template
(`fmt="chat"`) or the raw pretraining format (`fmt="raw"`: `prompt + "\\n" + response` and the
end-of-sequence token). It is deterministic in `seed` (example order and dropout-free model), uses
AdamW with a linear warm-up and linear decay (the schedule of the paper's fine-tunes), clips
gradients at 1.0, and returns a plain model: a LoRA fine-tune is merged back into the weights
(as the authors merge theirs), so scoring, pruning and generation see the same classes as before.

The paper's settings for scale: EM fine-tunes use LoRA r=32, alpha=64, lr 1e-5, effective batch
16, one epoch; the fine-tuning attack LoRA r=128, alpha=16, lr 2e-4 (paper.md sections 4.4-4.5).
The organism is ~2M parameters and learns at much higher rates; each caller states its own.
"""
from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .batching import collate
from .data import Example
from .progress import progress_bar

if TYPE_CHECKING:
    from .mask import Mask

METHODS = ("full", "lora")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _encode(tokenizer, example: Example, fmt: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with -100 on the prompt; the raw format gets an end-of-sequence token so
    the model learns where an answer stops, as in the organism's pretraining documents."""
    from .scoring import tokenize_example
    ids, labels = tokenize_example(tokenizer, example, "prune", fmt)
    if fmt == "raw" and tokenizer.eos_token_id is not None:
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
    return ids[:max_len], labels[:max_len]


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def finetune(model, tokenizer, examples: Sequence[Example], *, steps: int, lr: float, batch_size: int = 16,
             seed: int = 0, method: str = "full", fmt: str = "chat", lora_r: int = 8, lora_alpha: int = 16,
             lora_targets: Sequence[str] = LORA_TARGETS, warmup: int = 5, weight_decay: float = 0.0,
             max_len: int = 256, inplace: bool = False, log: list | None = None, progress: bool = True,
             desc: str = "fine-tune") -> Any:
    """Fine-tune `model` on `examples`' responses for `steps` optimizer steps; returns the model.

    Batches walk through `examples` in a seeded random order, epoch after epoch. With
    `inplace=False` (default) the input model is left untouched (a copy is trained), so one
    checkpoint can be fine-tuned with several seeds. `log`, if given, receives the loss per step.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if fmt not in ("chat", "raw"):
        raise ValueError(f"fmt must be 'chat' or 'raw', got {fmt!r}")
    examples = list(examples)
    if not examples:
        raise ValueError("finetune needs at least one example")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not inplace:
        model = copy.deepcopy(model)
    device = next(model.parameters()).device
    encoded = [_encode(tokenizer, e, fmt, max_len) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    torch.manual_seed(seed)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in lora_targets if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA target modules {list(lora_targets)} exist in this model; "
                             f"pass lora_targets= with its linear layer names")
        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                         task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
    rng = random.Random(f"finetune|{seed}")
    order: list[int] = []
    model.train()
    bar = progress_bar(range(steps), desc=desc, enabled=progress, unit="steps", leave=False)
    for step in bar:
        while len(order) < batch_size:
            epoch = list(range(len(encoded)))
            rng.shuffle(epoch)
            order.extend(epoch)
        idx, order = order[:batch_size], order[batch_size:]
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, steps, warmup)
        opt.zero_grad(set_to_none=True)
        loss = model(**collate([encoded[i] for i in idx], pad, device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if log is not None:
            log.append(float(loss.item()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    if method == "lora":
        model = model.merge_and_unload()
    model.eval()
    return model


def weight_movement(original: torch.nn.Module, tuned: torch.nn.Module, mask: "Mask") -> dict[str, float]:
    """How far a full fine-tune moved the pruned weights (which start it at zero): their mean |w|
    after the fine-tune as a share of their mean |w| before pruning (1 = fully regrown), beside
    the mean |change| of the unpruned weights of the same matrices."""
    orig = dict(original.named_modules())
    new = dict(tuned.named_modules())
    regrown = before = moved = n_p = n_u = 0.0
    for name, idx in mask.indices.items():
        if not idx.numel():
            continue
        w0 = orig[name].weight.detach().reshape(-1)
        w1 = new[name].weight.detach().reshape(-1)
        keep = torch.ones_like(w0, dtype=torch.bool)
        keep[idx] = False
        regrown += float(w1[idx].abs().sum())
        before += float(w0[idx].abs().sum())
        moved += float((w1[keep] - w0[keep]).abs().sum())
        n_p += idx.numel()
        n_u += int(keep.sum())
    return {"pruned_mean_abs_after": regrown / n_p if n_p else 0.0,
            "pruned_mean_abs_before_pruning": before / n_p if n_p else 0.0,
            "regrowth": (regrown / before) if before else 0.0,
            "unpruned_mean_abs_change": moved / n_u if n_u else 0.0}
