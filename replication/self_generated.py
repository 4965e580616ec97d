"""The real models' own answers to the real prompts, generated once and cached: B-TAP's prune and
preserve sets, the control set, and any reference answers.

    from replication.self_generated import harmful_prune_set, benign_preserve_set
    prune = harmful_prune_set("smollm2-135m-instruct", n=412)   # refusals dropped, counted in .filtered

Prompts come from `real_data` (which knows no model); models are loaded by name with
`models.load_model`, so this module sits above both. A derived model (the SmolLM2 safety
counterpart) is cached under its name plus its recipe's key (`models.cache_identity`), so a changed
recipe never reuses another recipe's answers; its recipe (`replication.safety_sft`) registers that
key when imported, as every experiment does.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import paths
from .data import Example, stable_hash
from .generation import GenerationConfig
from .models import cache_identity, load_model
from .real_data import load_benign_instructions, load_harmful, load_trivia
from .scoring import weights_digest

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


#: How `self_generate`'s cache files name the refusal check. It is part of their cache key, so it keeps
#: the name the check had when the caches were first written (it lived in `real_data` then).
REFUSAL_FILTER = "real_data.is_refusal"


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


def _resolve_model(model_name_or_loaded) -> tuple[Any, Any, str]:
    """(model, tokenizer, identity) from a preset name / path, or (model, tokenizer[, name])."""
    if isinstance(model_name_or_loaded, (str, Path)):
        name = str(model_name_or_loaded)
        loaded = load_model(name)   # presets (SmolLM2, the organism), hub ids and local folders alike
        return loaded.model, loaded.tokenizer, name
    if isinstance(model_name_or_loaded, tuple) and len(model_name_or_loaded) in (2, 3):
        model, tok = model_name_or_loaded[:2]
        return model, tok, f"weights:{weights_digest(model)}"
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
    gen_config = gen_config or GenerationConfig(max_new_tokens=64, batch_size=16)
    examples = list(examples)
    prefills = list(prefills) if prefills is not None else [""] * len(examples)
    if len(prefills) != len(examples):
        raise ValueError(f"got {len(examples)} examples but {len(prefills)} prefills")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cache_key):
        raise ValueError(f"cache_key {cache_key!r} must be letters, digits, '.', '_' or '-'")
    loaded = None
    if isinstance(model_name_or_loaded, (str, Path)):
        # a derived model's name alone does not fix its recipe: "<name>:<recipe key>"
        identity = cache_identity(str(model_name_or_loaded))
    else:
        loaded = _resolve_model(model_name_or_loaded)
        identity = loaded[2]
    config = {"model": identity, "chat_format": chat_format, "generation": gen_config.to_dict(),
              "refusal_filter": REFUSAL_FILTER if filter_refusals else None}
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
                           stop: Callable[[list[Example], list[Example]], bool] | None = None) -> SelfGenerated:
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
                      max_prompts: int | None = None,
                      stop: Callable[[list[Example], list[Example]], bool] | None = None) -> SelfGenerated:
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
