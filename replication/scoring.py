"""Importance scores for B-TAP, streamed through hooks in one pass over the calibration data.

    from replication.scoring import compute_scores
    harm = compute_scores(model, tok, harmful_examples, score="signed", role="prune")
    keep = compute_scores(model, tok, benign_examples, score="abs", role="preserve")

Scores (paper.md section 3.2; the authors' `prune_attribution_score` + `_prune_core`):

- signed SNIP  `S_h = W * sum_x dL(x)/dW`         (the harmful, "prune" side, `--no_abs`)
- absolute SNIP `S_b = |W| * sum_x |dL(x)/dW|`    (the benign, "preserve" side; Wei et al.'s `wandg`)
- Wanda        `|W| * ||X_j||_2`                   (input-column L2 norm over every real token)

`L(x)` is the mean NLL over the response tokens of one example (prompt labels ignored); the
per-example losses are summed over examples, never averaged.

How it runs (the authors re-run the whole calibration set once per decoder layer with only that
layer trainable; we do one pass): every parameter is frozen, the embedding output is marked as
requiring grad so that autograd builds the graph, a forward hook on each target `nn.Linear`
keeps its input `X (B,T,in)` and a tensor hook on its output receives `dY (B,T,out)`. The weight
gradient is formed right there, `dW = dY^T X` (summed over the batch for the signed score, per
example then `abs` for the absolute score, chunked over the batch to bound memory), added into
an fp32 accumulator on the weight's device, and `X` is dropped. No `.grad` is ever allocated.
All hooks live in a context manager that removes them (and restores `requires_grad`) even on
error. Scores are keyed by the module path a user sees in `print(model)`
(`model.layers.3.mlp.down_proj`).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import collate
from .data import Example

ScoreKind = Literal["signed", "abs", "wanda"]
Role = Literal["prune", "preserve"]
Fmt = Literal["raw", "chat"]

SCORE_KINDS = ("signed", "abs", "wanda")
ROLES = ("prune", "preserve")
FORMATS = ("raw", "chat")

#: Upper bound (elements) on the per-example gradient block formed at once for the absolute score.
ABS_CHUNK_ELEMENTS = 2**28


class Scores(dict):
    """`dict[str, Tensor]` of scores keyed by module path, plus `meta` (how they were made) and
    `fingerprint` (of the model they were computed on)."""

    def __init__(self, *args: Any, meta: dict[str, Any] | None = None, fingerprint: str | None = None,
                 probe: dict[str, torch.Tensor] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.meta: dict[str, Any] = dict(meta or {})
        self.fingerprint: str | None = fingerprint
        #: `weight_probe` of the scored modules (lets a mask refuse a fine-tune of the same base).
        self.probe: dict[str, torch.Tensor] | None = probe


# ----------------------------------------------------------------------------------------------
# Which modules
# ----------------------------------------------------------------------------------------------
def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the first `nn.ModuleList` (in `named_modules` order) whose blocks hold
    `nn.Linear`s, e.g. `model.layers` of a `LlamaForCausalLM`. Returns `(path, module_list)`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if any(isinstance(m, nn.Linear) for m in module[0].modules()):
                return name, module
    raise ValueError(
        f"no decoder layers found in {type(model).__name__}: expected an nn.ModuleList of transformer "
        "blocks containing nn.Linear projections (e.g. model.model.layers of a Hugging Face causal LM); "
        "pass a transformers *ForCausalLM model (not a pipeline or a wrapped/compiled module)"
    )


def decoder_linears(model: nn.Module, layers: Sequence[int] | None = None,
                    module_types: Sequence[str] | None = None) -> dict[str, nn.Linear]:
    """Every `nn.Linear` inside the decoder layers, keyed by dotted path, in model order.

    `layers` restricts to those block indices; `module_types` to those final path components
    (e.g. `["down_proj", "o_proj"]`). Embeddings, norms and `lm_head` are never included."""
    prefix, blocks = find_decoder_layers(model)
    n = len(blocks)
    if layers is not None:
        layers = [int(i) for i in layers]
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range: the model has {n} decoder layers (0..{n - 1})")
        layers = {i % n for i in layers}
    found: dict[str, nn.Linear] = {}
    for i, block in enumerate(blocks):
        if layers is not None and i not in layers:
            continue
        for sub, mod in block.named_modules():
            if isinstance(mod, nn.Linear):
                found[f"{prefix}.{i}.{sub}"] = mod
    if module_types is not None:
        wanted = set(module_types)
        available = sorted({k.rsplit(".", 1)[-1] for k in found})
        unknown = wanted - set(available)
        if unknown:
            raise ValueError(f"unknown module_types {sorted(unknown)}; this model's decoder Linears are {available}")
        found = {k: v for k, v in found.items() if k.rsplit(".", 1)[-1] in wanted}
    if not found:
        raise ValueError("no decoder nn.Linear modules selected; check `layers` and `module_types`")
    return found


def layer_index(path: str, prefix: str) -> int:
    """Decoder block index of a module path (`model.layers.3.mlp.up_proj` -> 3)."""
    return int(path[len(prefix) + 1:].split(".", 1)[0])


def model_fingerprint(model: nn.Module) -> str:
    """A cheap, stable fingerprint of a model, used to refuse a mask made for another model.

    Hashes the class name, the config's architecture fields, every parameter's name and shape,
    and a strided sample of 256 values of every parameter that no mask ever touches (embeddings,
    norms, `lm_head`, biases), rounded to bfloat16 so that fp32 and bf16 copies of the same model
    agree. Decoder Linear weights are left out of the values on purpose, so that a pruned model
    keeps its fingerprint (masks can be chained and re-applied); a fine-tune that only changes
    decoder Linear weights (e.g. LoRA on the projections) therefore keeps it too.
    """
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings"):
            h.update(f"{key}={getattr(cfg, key, None)};".encode())
    try:
        skip = {f"{k}.weight" for k in decoder_linears(model)}
    except ValueError:
        skip = set()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
        if name in skip or p.device.type == "meta" or p.numel() == 0:
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu", torch.bfloat16).contiguous()
        h.update(sample.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:20]


#: How many values of each decoder Linear weight `weight_probe` samples.
def weights_digest(model) -> str:
    """A cheap digest of a model state (a strided sample and the sum of every parameter): the key of
    caches of what a model computes (its generations, its importance scores), which must never be
    reused for a changed (pruned, fine-tuned) copy.

    Not `model_fingerprint`, which identifies the model a mask was made for and deliberately leaves
    out the weights a prune zeroes; this one changes whenever any weight does."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
            h.update(str(float(flat.double().sum())).encode())
    return h.hexdigest()[:16]


PROBE_SIZE = 32


def _probe_positions(numel: int, size: int = PROBE_SIZE) -> torch.Tensor:
    step = max(1, numel // size)
    return torch.arange(0, numel, step)[:size]


def weight_probe(modules: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """A few strided values of each decoder Linear weight, as the int16 bits of their bfloat16
    rounding. `model_fingerprint` leaves these weights out so that a pruned model keeps its
    fingerprint; the probe covers them, so that a mask also refuses a fine-tune of the same base
    (e.g. an aligned counterpart made with merged LoRA on the projections). Compare with
    `probe_agreement`, which ignores zeros (they may be pruned entries)."""
    out = {}
    for name, mod in modules.items():
        w = mod.weight.detach()
        if w.device.type == "meta":
            continue
        flat = w.reshape(-1)
        pos = _probe_positions(flat.numel()).to(flat.device)
        out[name] = flat[pos].to("cpu", torch.bfloat16).contiguous().view(torch.int16).clone()
    return out


def probe_agreement(expected: dict[str, torch.Tensor], modules: dict[str, nn.Linear]) -> tuple[int, int]:
    """`(matching, compared)` probe values: values now zero in the model are not compared (they
    may have been pruned), and modules absent from either side are skipped."""
    now = weight_probe({k: v for k, v in modules.items() if k in expected})
    zero_bits = torch.tensor(0.0, dtype=torch.bfloat16).view(torch.int16).item()
    neg_zero_bits = torch.tensor(-0.0, dtype=torch.bfloat16).view(torch.int16).item()
    match = compared = 0
    for name, vals in now.items():
        ref = expected[name]
        if ref.shape != vals.shape:
            continue
        keep = (vals != zero_bits) & (vals != neg_zero_bits)
        compared += int(keep.sum())
        match += int((vals[keep] == ref[keep]).sum())
    return match, compared


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------
def _describe(example: Example, index: int | None) -> str:
    where = f"example {index}" if index is not None else "an example"
    return f"{where} (prompt {example.prompt[:60]!r}, category {example.category!r})"


def tokenize_example(tokenizer: Any, example: Example, role: Role, fmt: Fmt = "raw",
                     skip_response_tokens: int = 0, *, index: int | None = None) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of one calibration example, labels -100 outside the loss.

    Always `add_special_tokens=False` (no BOS), prompt and response tokenised separately and
    concatenated, exactly as the authors' `get_align`:

    - `fmt="raw"`, `role="prune"` (harmful data): `tok(prompt + "\\n") + tok(response)`;
    - `fmt="raw"`, `role="preserve"` (benign data): `tok(prompt) + tok("\\n" + response)`, so the
      newline token is *inside* the benign loss (paper.md section 3.2, "Mind the asymmetry");
    - `fmt="chat"`: the tokenizer's own chat template; the prompt part is the template of the
      user turn with `add_generation_prompt=True`, the response part is the rest of the rendered
      conversation (the assistant text and its end-of-turn tokens, which are in the loss).

    `skip_response_tokens=k` additionally masks the first `k` response tokens (a loss window
    ablation; the paper's default is 0). Raises `ValueError` naming the example when the response
    has no tokens, or not more than `k`.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if skip_response_tokens < 0:
        raise ValueError(f"skip_response_tokens must be >= 0, got {skip_response_tokens}")
    if not tokenizer(example.response, add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{_describe(example, index)} has an empty response (no tokens after tokenisation): "
                         "drop it from the calibration set or give it a response")
    if fmt == "raw":
        if role == "prune":
            prompt_text, response_text = example.prompt + "\n", example.response
        else:
            prompt_text, response_text = example.prompt, "\n" + example.response
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("fmt='chat' needs a tokenizer with a chat template; set tokenizer.chat_template "
                             "or use fmt='raw'")
        user = [{"role": "user", "content": example.prompt}]
        prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": example.response}],
                                             tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError(f"{_describe(example, index)}: the chat template renders the conversation so that it "
                             "does not start with the generation prompt, so the response cannot be split off; "
                             "use fmt='raw' or a template whose assistant turn extends the generation prompt")
        response_text = full[len(prompt_text):]
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    response_ids = list(tokenizer(response_text, add_special_tokens=False)["input_ids"])
    if len(response_ids) <= skip_response_tokens:
        raise ValueError(f"{_describe(example, index)} has {len(response_ids)} response tokens, not more than "
                         f"skip_response_tokens={skip_response_tokens}: lower skip_response_tokens or drop it")
    input_ids = prompt_ids + response_ids
    labels = [-100] * (len(prompt_ids) + skip_response_tokens) + response_ids[skip_response_tokens:]
    return input_ids, labels


def tokenize_examples(tokenizer: Any, examples: Sequence[Example], role: Role, fmt: Fmt = "raw",
                      skip_response_tokens: int = 0) -> list[tuple[list[int], list[int]]]:
    """`tokenize_example` over a calibration set; an empty set is an error."""
    examples = list(examples)
    if not examples:
        raise ValueError(f"empty calibration set for role={role!r}: pass at least one Example")
    return [tokenize_example(tokenizer, ex, role, fmt, skip_response_tokens, index=i) for i, ex in enumerate(examples)]


def _batches(encoded: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
    """Example indices grouped into batches of similar length (longest first; deterministic)."""
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i][0]), i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def summed_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over examples of each example's mean NLL over its labelled tokens (HF label shift)."""
    V = logits.shape[-1]
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), shift_labels.reshape(-1),
                          ignore_index=-100, reduction="none").view(shift_labels.shape)
    count = (shift_labels != -100).sum(1).clamp_min(1)
    return (nll.sum(1) / count).sum()


# ----------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------
_OUT_DTYPE_OK: dict[str, bool] = {}


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` with an fp32 result; low-precision inputs use the fp32-output kernel where the
    backend has one (CUDA), else are upcast first."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    key = a.device.type
    if _OUT_DTYPE_OK.get(key, True) and a.dim() == 2:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_OK[key] = False
    return a.float() @ b.float()


def _bmm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return torch.bmm(a, b)
    key = "bmm:" + a.device.type
    if _OUT_DTYPE_OK.get(key, True):
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_OK[key] = False
    return torch.bmm(a.float(), b.float())


class _ScoreHooks:
    """Forward/backward hooks that stream weight gradients (or input norms) into fp32 accumulators."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Linear], kind: str,
                 abs_chunk_elements: int = ABS_CHUNK_ELEMENTS):
        self.model, self.modules, self.kind = model, modules, kind
        self.abs_chunk_elements = abs_chunk_elements
        self.acc: dict[str, torch.Tensor] = {}
        for name, mod in modules.items():
            w = mod.weight
            shape = (w.shape[1],) if kind == "wanda" else tuple(w.shape)
            self.acc[name] = torch.zeros(shape, dtype=torch.float32, device=w.device)
        self.token_mask: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []
        self._training = model.training

    # -- forward hooks --------------------------------------------------------------------------
    def _mark_embedding(self, module, inputs, output):
        if isinstance(output, torch.Tensor) and not output.requires_grad:
            output.requires_grad_(True)
        return output

    def _linear_forward(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            if self.kind == "wanda":
                x2 = x.detach().reshape(-1, x.shape[-1])
                if self.token_mask is not None:
                    x2 = x2[self.token_mask.to(x2.device).reshape(-1)]
                acc = self.acc[name]
                acc.add_(x2.float().pow(2).sum(0).to(acc.device))
                return None
            if not output.requires_grad:
                raise RuntimeError(f"{name}: output does not require grad; the graph was not built "
                                   "(is the embedding hook missing, or the model in inference mode?)")
            box = [x.detach()]
            output.register_hook(lambda dy, name=name, box=box: self._accumulate(name, box, dy))
            return None
        return hook

    # -- backward -------------------------------------------------------------------------------
    def _accumulate(self, name: str, box: list, dy: torch.Tensor) -> None:
        x = box.pop()
        acc = self.acc[name]
        x = x.to(dy.device)
        out_f, in_f = dy.shape[-1], x.shape[-1]
        with torch.no_grad():
            if self.kind == "signed":
                dy2, x2 = dy.reshape(-1, out_f), x.reshape(-1, in_f)
                if dy2.dtype == x2.dtype == acc.dtype and dy2.device == acc.device:
                    acc.addmm_(dy2.t(), x2)   # in place: no weight-sized temporary per batch
                else:
                    acc.add_(_mm_f32(dy2.t(), x2).to(acc.device))
            else:
                B = dy.shape[0] if dy.dim() == 3 else 1
                dy3 = dy.reshape(B, -1, out_f)
                x3 = x.reshape(B, -1, in_f)
                chunk = max(1, self.abs_chunk_elements // max(1, out_f * in_f))
                for s in range(0, B, chunk):
                    g = _bmm_f32(dy3[s:s + chunk].transpose(1, 2), x3[s:s + chunk])
                    acc.add_(g.abs_().sum(0).to(acc.device))
                    del g
        del x
        return None

    # -- context ----------------------------------------------------------------------------------
    def __enter__(self) -> "_ScoreHooks":
        try:
            self.model.eval()
            if self.kind != "wanda":
                for p in self.model.parameters():
                    self._requires_grad.append((p, p.requires_grad))
                    p.requires_grad_(False)
                emb = self.model.get_input_embeddings()
                self._handles.append(emb.register_forward_hook(self._mark_embedding))
            for name, mod in self.modules.items():
                self._handles.append(mod.register_forward_hook(self._linear_forward(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
        self._requires_grad.clear()
        self.model.train(self._training)
        self.token_mask = None


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------
def _checkpointing(model: nn.Module) -> bool:
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), attr) or attr in vars(model):
            return bool(getattr(model, attr))
    return False


def _input_device(model: nn.Module) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except AttributeError:
        return next(model.parameters()).device


def compute_scores(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *,
                   score: ScoreKind, role: Role, fmt: Fmt = "raw", skip_response_tokens: int = 0,
                   batch_size: int = 8, layers: Sequence[int] | None = None,
                   module_types: Sequence[str] | None = None, progress: bool = True,
                   out_device: str | torch.device | None = "cpu",
                   abs_chunk_elements: int = ABS_CHUNK_ELEMENTS) -> Scores:
    """Scores of every decoder `nn.Linear` weight, in one pass over `examples`.

    `score`: "signed" (`W * sum_x g_x`), "abs" (`|W| * sum_x |g_x|`, per-example gradients) or
    "wanda" (`|W| * ||X_j||_2` over every real token, prompt included; forward only).
    `role`/`fmt`/`skip_response_tokens`: how examples become `(input_ids, labels)`, see
    `tokenize_example`. `batch_size` only changes speed and memory (examples are right-padded;
    per-example losses are summed, so the gradient is the sum of per-example gradients).
    Returns a `Scores` dict of fp32 tensors shaped like each weight, keyed by module path, on
    `out_device` (None: each on its weight's device, which saves host memory on big GPUs), with
    `.meta` (settings, example and token counts), `.fingerprint` and `.probe` of the model.
    """
    if score not in SCORE_KINDS:
        raise ValueError(f"score must be one of {SCORE_KINDS}, got {score!r}")
    if score != "wanda" and torch.is_inference_mode_enabled():
        raise RuntimeError("compute_scores needs autograd: call it outside `torch.inference_mode()`")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if _checkpointing(model) and score != "wanda":
        raise ValueError("gradient checkpointing re-runs forward hooks; call model.gradient_checkpointing_disable() "
                         "before computing scores")
    modules = decoder_linears(model, layers, module_types)
    offloaded = [k for k, m in modules.items() if m.weight.device.type == "meta"]
    if offloaded:
        raise ValueError(f"{len(offloaded)} decoder Linear weights are offloaded (meta device, e.g. {offloaded[0]}): "
                         "load the model onto GPUs/CPU without disk offload (device_map without 'disk') to score it")
    encoded = tokenize_examples(tokenizer, examples, role, fmt, skip_response_tokens)
    batches = _batches(encoded, batch_size)
    device = _input_device(model)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else int(pad_id)
    n_tokens = sum(len(a) for a, _ in encoded)
    n_loss_tokens = sum(sum(1 for t in b if t != -100) for _, b in encoded)

    from .progress import progress_bar

    bar = progress_bar(total=len(encoded), desc=f"{score} scores ({role})", unit="ex", enabled=progress)
    hooks = _ScoreHooks(model, modules, score, abs_chunk_elements)
    total_loss = 0.0
    try:
        with hooks:
            for idx in batches:
                batch = collate([encoded[i] for i in idx], pad_id, device)
                ids, lab, att = batch["input_ids"], batch["labels"], batch["attention_mask"]
                if score == "wanda":
                    hooks.token_mask = att.bool()
                    with torch.no_grad():
                        model(input_ids=ids, attention_mask=att, use_cache=False)
                else:
                    with torch.enable_grad():
                        out = model(input_ids=ids, attention_mask=att, use_cache=False)
                        loss = summed_mean_nll(out.logits, lab.to(out.logits.device))
                        del out
                        loss.backward()
                    total_loss += float(loss.detach())
                    del loss
                bar.update(len(idx))
    finally:
        bar.close()

    result = Scores(meta=dict(score=score, role=role, fmt=fmt, skip_response_tokens=skip_response_tokens,
                              n_examples=len(encoded), n_tokens=n_tokens, n_loss_tokens=n_loss_tokens,
                              summed_loss=total_loss if score != "wanda" else None,
                              accumulator="float32"),
                    fingerprint=model_fingerprint(model), probe=weight_probe(modules))
    with torch.no_grad():
        for name, mod in modules.items():
            acc = hooks.acc.pop(name)
            w = mod.weight.detach()
            if score == "signed":
                s = acc.mul_(w.to(acc.device, torch.float32))
            elif score == "abs":
                s = acc.mul_(w.to(acc.device, torch.float32).abs())
            else:
                s = w.to(acc.device, torch.float32).abs() * acc.sqrt_().unsqueeze(0)
            result[name] = s if out_device is None else s.to(out_device)
            del acc, s
    return result


@torch.no_grad()
def nll_by_position(model: nn.Module, tokenizer: Any, examples: Sequence[Example], role: Role = "prune",
                    fmt: Fmt = "raw", max_positions: int | None = None,
                    batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL (nats) and token count at each response position, over `examples` tokenised
    exactly as the scoring loss sees them (`tokenize_example`, `role`, `fmt`).

    Where the loss sits along a response is what the gradient scores can see: a response the
    model already predicts with certainty contributes almost no gradient past its first tokens.
    Returns `(sums, counts)`, float64 tensors over positions 0..L-1 (L: the longest response, or
    `max_positions`); `sums / counts` is the per-position mean, `sums[k:].sum() / counts[k:].sum()`
    the token-weighted mean past position k."""
    encoded = tokenize_examples(tokenizer, examples, role, fmt)
    width = max(sum(1 for t in lab if t != -100) for _, lab in encoded)
    width = min(width, max_positions) if max_positions else width
    sums = torch.zeros(width, dtype=torch.float64)
    counts = torch.zeros(width, dtype=torch.float64)
    device = _input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(encoded, batch_size):
            enc = collate([encoded[i] for i in batch], pad, device)
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, :-1]
            labels = enc["labels"][:, 1:]
            scored = labels != -100
            nll = F.cross_entropy(logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none")
            position = scored.cumsum(1) - 1                   # index of each scored token within its response
            keep = scored & (position < width)
            where = position[keep].cpu()
            sums.index_add_(0, where, nll[keep].double().cpu())
            counts.index_add_(0, where, torch.ones(where.numel(), dtype=torch.float64))
    finally:
        model.train(was_training)
    return sums, counts


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a-b| / max|b| (0 when both are zero): the tolerance measure used in tests."""
    denom = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)


__all__ = [
    "Scores", "compute_scores", "tokenize_example", "tokenize_examples", "find_decoder_layers",
    "decoder_linears", "model_fingerprint", "weight_probe", "probe_agreement", "summed_mean_nll",
    "layer_index", "relative_error", "nll_by_position",
]
