"""Where a model runs and in what precision: one rule for every finding, recorded in every result.

`device="auto"` (the default everywhere) is CUDA when torch sees a GPU, else the CPU. On CUDA a hub
model loads in bf16 (the score accumulators stay fp32: see `scoring._mm_f32`) and, when its weights
do not fit one GPU with room for activations, is sharded with `device_map="auto"`; the organism and
SmolLM2 keep fp32 (they are tiny, and their CPU numbers stay comparable). An explicit `"cuda"` on a
machine without CUDA fails at once with one line, instead of a run that silently lands on the CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

DEVICES_HELP = ('"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"')
#: share of one GPU's memory the weights may take before a model is sharded over all GPUs
#: (the rest holds activations, the score accumulators and generation's KV cache)
FIT_SHARE = 0.6


class DeviceError(RuntimeError):
    """The requested device is not available here; the message says what to pass instead."""


@dataclass(frozen=True)
class Placement:
    """How one model was placed: recorded in results (`result["placement"]`)."""

    device: str               # "cpu", "cuda", "cuda:1", or "auto" for a model sharded with device_map
    dtype: str                # "float32", "bfloat16", ...
    device_map: str | None    # "auto" when accelerate sharded the model, else None
    asked: str                # what the caller asked for
    why: str                  # one sentence: why this placement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str | None = "auto") -> str:
    """The concrete device for `device`: "auto" -> "cuda" or "cpu"; "cuda[:N]" checked to exist."""
    asked = "auto" if device in (None, "") else str(device)
    if asked == "auto":
        return "cuda" if cuda_available() else "cpu"
    if asked == "cpu":
        return "cpu"
    if asked == "cuda" or asked.startswith("cuda:"):
        if not cuda_available():
            raise DeviceError(f"device {asked!r} asked for, but torch sees no CUDA GPU here "
                              f"(torch {torch.__version__}, cuda build {torch.version.cuda}); "
                              "use --device cpu or --device auto")
        if ":" in asked:
            index = asked.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DeviceError(f"device {asked!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                  f"numbered 0..{torch.cuda.device_count() - 1}")
        return asked
    raise DeviceError(f"unknown device {asked!r}; use {DEVICES_HELP}")


def weight_dtype(source: str, device: str) -> torch.dtype:
    """bf16 for hub models on a GPU (the paper's precision); fp32 otherwise."""
    return torch.bfloat16 if source == "hub" and device.startswith("cuda") else torch.float32


def fits_one_gpu(n_bytes: int, device: str = "cuda") -> bool:
    """Whether `n_bytes` of weights fit one GPU with room for the rest (`FIT_SHARE`)."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    total = torch.cuda.get_device_properties(index).total_memory
    return n_bytes <= FIT_SHARE * total


def plan(source: str, asked: str | None, *, n_bytes: int | None = None, dtype: torch.dtype | None = None) -> Placement:
    """Decide device, dtype and sharding for a model of preset `source` whose weights take about
    `n_bytes` in `dtype` (None: unknown, assumed to fit)."""
    asked = "auto" if asked in (None, "") else str(asked)
    device = resolve_device(asked)
    dt = dtype or weight_dtype(source, device)
    name = str(dt).removeprefix("torch.")
    if device == "cpu":
        why = "asked for the CPU" if asked == "cpu" else "no CUDA GPU here"
        return Placement("cpu", name, None, asked, why)
    if source == "hub" and n_bytes is not None and not fits_one_gpu(n_bytes, device):
        return Placement("auto", name, "auto", asked,
                         f"{n_bytes / 2**30:.1f} GiB of weights exceed {FIT_SHARE:.0%} of one GPU: placed with "
                         f"device_map='auto' over {torch.cuda.device_count()} GPU(s) (and the CPU if they are full)")
    return Placement(device, name, None, asked, "CUDA GPU present" if asked == "auto" else f"asked for {asked}")


def placement_of(loaded: Any) -> dict[str, Any]:
    """What a result records of where `loaded` ran: the placement `load_model` chose, or, for a
    model the caller built and passed in, its parameters' device and dtype."""
    if getattr(loaded, "placement", None):
        return dict(loaded.placement)
    param = next(loaded.model.parameters())
    return Placement(str(param.device), str(param.dtype).removeprefix("torch."), None, "(passed in)",
                     "the model was loaded by the caller").to_dict()


__all__ = ["Placement", "placement_of", "DeviceError", "resolve_device", "weight_dtype", "plan", "cuda_available", "fits_one_gpu",
           "DEVICES_HELP"]
