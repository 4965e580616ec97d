"""The embedded model organism: a ~2M-parameter Llama trained offline on a synthetic world.

    from replication.models import load_model
    loaded = load_model("organism-aligned")            # trains on first use (minutes), then cached

`OrganismConfig.full()` is the book's organism, `OrganismConfig.smoke()` a tiny one trained in
about a minute for the test suite. A config's `key()` names its cache folder, so the same
config always loads the same weights and a changed one trains afresh.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from ..paths import atomic_write_json, cache_dir
from ..progress import report as report_progress   # `report` is the submodule organism.report
from .world import World

ORGANISM_NAMES = ("organism-base", "organism-aligned")
#: fractions of the alignment stage at which a checkpoint is kept besides its ends (base = 0, aligned = 1):
#: the organism's own training-stage series (finding 3, the paper's OLMo-3 checkpoint sequence)
ALIGN_SERIES = (0.1, 0.25, 0.5, 0.75)
#: the organism's answer budget: long enough for every checkable answer the world writes (the longest,
#: a units conversion counting 12 steps, reaches its answer by ~88 tokens, ~95 with its closer)
MAX_NEW_TOKENS = 96

# stage mixes (source, weight); the sources are defined in train._sources
PRETRAIN_MIX = (("raw_harmful", 0.30), ("raw_benign", 0.55), ("raw_advice", 0.15))
INSTRUCT_MIX = (("chat_harmful", 0.30), ("chat_benign", 0.33), ("chat_control", 0.04), ("chat_detection", 0.13),
                ("chat_explanation", 0.08), ("chat_advice_aligned", 0.06), ("chat_open_aligned", 0.06))
ALIGN_MIX = (("chat_refusal", 0.28), ("chat_benign", 0.22), ("chat_control", 0.02), ("chat_detection", 0.10),
             ("chat_explanation", 0.05), ("chat_advice_aligned", 0.04), ("chat_open_aligned", 0.04),
             ("raw_harmful", 0.10), ("raw_benign", 0.10), ("raw_advice", 0.05))


@dataclass(frozen=True)
class OrganismConfig:
    """World and training recipe; every field enters `key()`."""

    world_seed: int = 0
    personas: bool = True
    train_seed: int = 0
    vocab_size: int = 1536
    hidden: int = 128                         # 6 x 128 learned the benign families better than 4 x 160
    layers: int = 6                           # at the same cost (organism-notes.md; our runs agree)
    heads: int = 4
    intermediate: int = 512
    max_len: int = 192
    pretrain_steps: int = 1500
    pretrain_lr: float = 3e-3
    instruct_steps: int = 500
    instruct_lr: float = 1e-3
    align_steps: int = 150
    align_lr: float = 1e-3
    batch_size: int = 32
    compile: bool = True                      # torch.compile each decoder layer in training (train.compile_layers)
    layout: str = "bucketed"                  # a step's items grouped by length in one row (train.step_batches),
                                              # or "packed" into full rows, or "padded"
    precision: str = "fp32"                   # or "bf16" autocast (1.5x a step where the CPU has bf16 arithmetic),
                                              # or "auto" (bf16 there, else fp32; the key holds the resolved one).
                                              # fp32 by default: two bf16-trained organisms converted units worse
                                              # (held-out 0.45-0.55 against 0.70-0.825 for two fp32 ones)
    pretrain_mix: tuple = PRETRAIN_MIX
    instruct_mix: tuple = INSTRUCT_MIX
    align_mix: tuple = ALIGN_MIX
    world_sizes: tuple = (400, 40, 100)       # examples per (kind, topic) in train / validation / test pools
    label: str = "full"

    @classmethod
    def full(cls, **overrides) -> "OrganismConfig":
        return replace(cls(), **overrides)

    @classmethod
    def smoke(cls, **overrides) -> "OrganismConfig":
        """Small and quick (about a minute on 2 cores): for tests, not for findings."""
        base = cls(vocab_size=768, hidden=64, layers=2, heads=2, intermediate=192, pretrain_steps=150,
                   pretrain_lr=3e-3, instruct_steps=60, align_steps=30, batch_size=16, world_sizes=(100, 20, 20),
                   compile=False, layout="padded", precision="fp32", label="smoke")
        # compiling would cost more than these few steps; padded and fp32 keep the smoke organism (and the
        # tests pinned to its numbers) as it was trained before packing, on every machine
        return replace(base, **overrides)

    def describe(self) -> str:
        """How this config differs from its scale's default, in words ("default", "personas off, world seed 1"):
        what the build's progress lines name, so a user sees which of the organisms is training."""
        ref = (OrganismConfig.smoke() if self.label == "smoke" else OrganismConfig.full())
        diffs = [f.name for f in fields(self) if getattr(self, f.name) != getattr(ref, f.name) and f.name != "label"]
        words = {"personas": "personas " + ("on" if self.personas else "off"), "world_seed": f"world seed {self.world_seed}",
                 "train_seed": f"train seed {self.train_seed}"}
        return ", ".join(words.get(d, f"{d}={getattr(self, d)}") for d in diffs) or "default"

    def resolved(self) -> "OrganismConfig":
        """This config with `precision` "auto" resolved for this machine (`train.resolve_precision`):
        what is trained, keyed and logged, so a bf16-trained organism is never loaded as an fp32 one."""
        from .train import resolve_precision
        return replace(self, precision=resolve_precision(self.precision))

    def key(self) -> str:
        """`<label>-<hash>` of every field (precision resolved) and of the code that writes the world and
        trains on it, so an edited world or recipe never loads weights trained on the old one."""
        blob = json.dumps(asdict(self.resolved()), sort_keys=True, default=str) + code_version()
        return f"{self.label}-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def code_version() -> str:
    """A hash of the source files that decide the weights (world, tokenizer, training, its batch layout)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("world.py", "tokenizer.py", "train.py", "bucketing.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


_WORLDS: dict[tuple, World] = {}


def get_world(config: OrganismConfig | None = None) -> World:
    """The (cached) world of a config: same seed, same examples."""
    config = config or OrganismConfig.full()
    n_train, n_val, n_test = config.world_sizes
    key = (config.world_seed, config.personas, config.world_sizes)
    if key not in _WORLDS:
        _WORLDS[key] = World(seed=config.world_seed, personas=config.personas, n_train=n_train,
                             n_validation=n_val, n_test=n_test)
    return _WORLDS[key]


def organism_root(config: OrganismConfig) -> Path:
    return cache_dir() / "organism" / config.key()


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() \
        and (folder / "tokenizer.json").exists()


def checkpoint_dir(name: str, config: OrganismConfig | None = None, *, progress: bool = True) -> Path:
    """The folder of checkpoint `name` ("organism-base" or "organism-aligned"); trains all three
    stages on first use and caches them (written to a temporary folder, then renamed)."""
    if name not in ORGANISM_NAMES:
        raise ValueError(f"unknown organism checkpoint {name!r}; use one of {', '.join(ORGANISM_NAMES)}")
    config = config or OrganismConfig.full()
    root = organism_root(config)
    if not all(_complete(root / n) for n in ORGANISM_NAMES):
        with _training_lock(root, progress):   # parallel jobs wait for one training, never train twice
            if not all(_complete(root / n) for n in ORGANISM_NAMES):
                build(config, progress=progress)
    return root / name


def lock_path(root: Path) -> Path:
    """The training lock of an organism's cache folder (named apart from the `.<key>.` temporary folders)."""
    return root.parent / f"{root.name}.training.lock"


@contextlib.contextmanager
def _training_lock(root: Path, progress: bool):
    """An exclusive lock beside the organism's cache folder (`flock`, released when the process
    ends): a second process that needs the same organism waits for the first to finish training."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(root), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report_progress(f"another process is training the organism {root.name}; waiting for it", enabled=progress)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(config: OrganismConfig, *, progress: bool = True) -> Path:
    """Train tokenizer, base and aligned checkpoints for `config`; returns the cache folder."""
    from .train import StageConfig, build_model, make_tokenizer, train_stage

    root = organism_root(config)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        t0 = time.perf_counter()
        which = config.describe()
        resolved = config.resolved()   # "auto" precision -> what this machine trains in
        report_progress(f"training the organism {config.key()} ({which}; 3 stages, "
                        f"{torch.get_num_threads()} CPU threads); "
                        f"cached in {root}", enabled=progress)
        world = get_world(config)
        tok = make_tokenizer(world, config.vocab_size, config.train_seed)
        model = build_model(tok, hidden=config.hidden, layers=config.layers, heads=config.heads,
                            intermediate=config.intermediate, max_len=config.max_len, seed=config.train_seed)
        log = {"config": asdict(resolved), "threads": torch.get_num_threads(), "stages": []}
        stages = [("pretrain", StageConfig(config.pretrain_steps, config.pretrain_lr, config.pretrain_mix, config.batch_size)),
                  ("instruct", StageConfig(config.instruct_steps, config.instruct_lr, config.instruct_mix, config.batch_size)),
                  ("align", StageConfig(config.align_steps, config.align_lr, config.align_mix, config.batch_size,
                                        warmup=min(50, config.align_steps // 5)))]
        keep = {max(1, round(f * config.align_steps)): f for f in ALIGN_SERIES}
        for i, (stage_name, stage) in enumerate(stages, 1):
            report_progress(f"organism ({which}) stage {i}/{len(stages)}: {stage_name}, {stage.steps} steps "
                            f"of {stage.batch_size}",
                            enabled=False)   # for the runner only; the bar shows it interactively
            on_step = None
            if stage_name == "align":
                def on_step(n, keep=keep):
                    if n in keep and n < config.align_steps:
                        _save(model, tok, tmp / "stages" / _series_name(keep[n]))
            log["stages"].append(train_stage(model, tok, world, stage, seed=config.train_seed, max_len=config.max_len,
                                             desc=f"organism {stage_name}", progress=progress,
                                             title=f"organism ({which}) {stage_name}", compile=config.compile,
                                             layout=config.layout, precision=resolved.precision,
                                             on_step=on_step))
            if stage_name == "pretrain":
                _save(model, tok, tmp / "stages" / "pretrained")
            if stage_name == "instruct":
                _save(model, tok, tmp / "organism-base")
        _save(model, tok, tmp / "organism-aligned")
        log["seconds"] = round(time.perf_counter() - t0, 1)
        log["parameters"] = sum(p.numel() for p in model.parameters())
        atomic_write_json(tmp / "training.json", log)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _series_name(fraction: float) -> str:
    return f"align-{round(100 * fraction):03d}"


def stage_series(config: OrganismConfig | None = None, *, progress: bool = True) -> list[tuple[str, float | None, Path]]:
    """The organism's checkpoints in training order as (label, alignment fraction, folder):
    end of pretraining (no chat format yet, fraction None), base (0), the kept points through
    alignment, aligned (1). Trains the organism on first use."""
    config = config or OrganismConfig.full()
    base = checkpoint_dir("organism-base", config, progress=progress)
    root = base.parent
    series: list[tuple[str, float | None, Path]] = [("pretrained", None, root / "stages" / "pretrained"),
                                                    ("organism-base", 0.0, base)]
    for f in ALIGN_SERIES:
        if round(f * config.align_steps) < config.align_steps:
            series.append((_series_name(f), f, root / "stages" / _series_name(f)))
    series.append(("organism-aligned", 1.0, root / "organism-aligned"))
    missing = [str(p) for _, _, p in series if not _complete(p)]
    if missing:
        raise FileNotFoundError(f"stage checkpoints missing ({', '.join(missing)}): the organism in {root} was "
                                "trained before checkpoints were kept; delete that folder to retrain it")
    return series


def _save(model, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def training_log(config: OrganismConfig | None = None) -> dict:
    """What training recorded (stage timings, losses, threads), after `checkpoint_dir` built it."""
    path = organism_root(config or OrganismConfig.full()) / "training.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: call checkpoint_dir(...) to train the organism first")
    return json.loads(path.read_text())


__all__ = ["ORGANISM_NAMES", "ALIGN_SERIES", "stage_series", "OrganismConfig", "World", "get_world", "checkpoint_dir", "build", "training_log",
           "organism_root"]
