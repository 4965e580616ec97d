"""Build the Jupyter Book (v1) from the executed notebooks in `results/`.

The committed `_toc.yml` is the skeleton: prose chapters and one page per finding. Before
building, this module (1) writes, for every finding, the list of models it was run on and
not run on, (2) writes the summary page from the results JSON files with the verdict rule
stated on it, and the status box of the introduction, and (3) writes `book/_generated/_toc.yml`: the skeleton plus, under each
finding, the executed notebook of every model that has one. The book never executes code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .findings import FINDINGS, PROXY_JUDGES, UNITS, VERDICTS, judge_label, run_label, verdict_of
from .paths import REPO_ROOT, atomic_write_text, results_dir, safe_name
from .runner import executed_notebooks
from .status import refresh_readme, status_markdown, verdict_cell

GENERATED = REPO_ROOT / "book" / "_generated"
BUILD_DIR = REPO_ROOT / "_build"


def _rel(path: Path) -> str:
    if not path.resolve().is_relative_to(REPO_ROOT):
        raise RuntimeError(f"{path} is outside the repository, so the book cannot render it: unset HARMPRUNE_RESULTS "
                           f"(or point it inside {REPO_ROOT}) and re-run the findings")
    return str(path.resolve().relative_to(REPO_ROOT)).removesuffix(".ipynb").removesuffix(".md")


def load_results() -> dict[str, dict[str, dict]]:
    """finding key -> model -> results dict, from `results/<folder>/<finding>.json`. A pair finding's
    folder is named after both models; its results are listed under the model they name (`model`),
    and only the file in the folder the finding files that model under counts (an older file left in
    another folder is ignored)."""
    out: dict[str, dict[str, dict]] = {}
    for f in FINDINGS.values():
        for path in sorted(results_dir().glob(f"*/{f.key}.json")):
            try:
                res = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise RuntimeError(f"{path} is not valid JSON ({err}); delete it and re-run the finding") from err
            if not f.per_pair:
                out.setdefault(f.key, {})[path.parent.name] = res
            elif path.parent.name == safe_name(res.get("folder") or ""):
                out.setdefault(f.key, {})[res.get("model", path.parent.name)] = res
    return out


def summary_markdown(results: dict[str, dict[str, dict]], models: list[str]) -> str:
    """The summary page: the verdicts first (one narrow table), then what each outcome means, the rules,
    and each measurement beside the paper's claim."""
    findings = [f for f in FINDINGS.values() if f.kind == "finding"]
    lines = ["# Summary: what was reproduced, on what", "",
             "Generated from the results files (`results/<model>/<finding>.json`; finding 3's under its pair, "
             "`results/<aligned>_vs_<unaligned>/`) each time the book is built; "
             "nothing on this page is typed by hand. The models are tiny testbeds, not the paper's 7-32B models "
             "({doc}`/book/limitations`).", "",
             "## Verdicts", "", "| finding | model | verdict | harm judge |", "|---|---|---|---|"]
    for f in findings:
        for model in models:
            res = results.get(f.key, {}).get(model)
            lines.append(f"| {f.title} | `{run_label(res, model)}` | {verdict_cell(f, res)} | {judge_label(res)} |")
    lines += ["", "A judge marked *(proxy)* is the offline stand-in for the paper's StrongREJECT classifier: "
              + PROXY_JUDGES["reference_nll"] + "; a verdict read off it is a verdict about that proxy.", "",
              "## How to read a verdict", "", UNITS, ""]
    lines += [f"- **{word}**: {meaning}." for word, meaning in VERDICTS.items()]
    lines += ["", "## The rules", "",
              "Each finding's rule is fixed in code (`replication/findings.py` and the finding's module in "
              "`replication/experiments/`) and applied the same way to every model's results.", ""]
    lines += [f"- **{f.title}**: {f.rule}" for f in findings]
    lines += ["", "## The paper's claims and our measurements", ""]
    for f in findings:
        lines += [f"### {f.title}", "", f"**The paper.** {f.claim} *Reported:* {f.paper_number}.", ""]
        for model in models:
            measured, word = verdict_of(f, results.get(f.key, {}).get(model))
            lines.append(f"- `{model}`: **{word}**" + (f". {measured[0].upper() + measured[1:]}." if measured != "-" else "."))
        lines.append("")
    controls = [f for f in FINDINGS.values() if f.kind == "control"]
    if controls:
        lines += ["## Controls of the pipeline (not results about models)", ""]
        for f in controls:
            ran = sorted(results.get(f.key, {}).items())
            if not ran:
                lines.append(f"- **{f.title}**: not run.")
            for model, res in ran:
                measured, word = verdict_of(f, res)
                lines.append(f"- **{f.title}** on `{model}`: finding 1's rule says **{word}** on the planted category. "
                             f"{measured[0].upper() + measured[1:]}.")
        lines.append("")
    return "\n".join(lines)


def finding_runs_markdown(key: str, runs: dict[str, Path], models: list[str],
                          results: dict[str, dict] | None = None) -> str:
    """The run list of one finding's page and, where results exist, each model's measurement and
    verdict side by side (the same rule as the summary page)."""
    f = FINDINGS[key]
    results = results or {}
    notebook_exists = (REPO_ROOT / "notebooks" / f.notebook).exists()
    lines = []
    if not notebook_exists:
        lines.append(f"```{{note}}\nThe notebook `notebooks/{f.notebook}` is not written yet: this finding is **not run** on any model.\n```")
    else:
        ran = sorted(runs)
        not_ran = [m for m in models if f.results_folder(m) not in runs]
        lines.append("**Run on:** " + (", ".join(f"`{m}`" for m in ran) if ran else "no model yet") + ".")
        if not_ran:
            lines.append("")
            lines.append("**Not run on:** " + ", ".join(f"`{m}`" for m in not_ran)
                         + f" (`python -m replication run {key} --model NAME`).")
        if f.verdict is not None and results:
            lines += ["", "| model | verdict | our measurement |", "|---|---|---|"]
            for model in sorted(results):
                measured, _ = verdict_of(f, results[model])
                lines.append(f"| `{run_label(results[model], model)}` | {verdict_cell(f, results[model])} | {measured} |")
    return "\n".join(lines) + "\n"


def _models(models: list[str] | None, runs: dict | None = None, results: dict | None = None) -> list[str]:
    """The models a page lists: those asked for, then every model with an executed notebook or results."""
    runs = executed_notebooks() if runs is None else runs
    results = load_results() if results is None else results
    # a pair finding's run folders are pairs, not models: its models come from its results
    known = sorted({m for k, r in runs.items() if not FINDINGS[k].per_pair for m in r}
                   | {m for r in results.values() for m in r})
    return list(dict.fromkeys((models or []) + known)) or ["organism-aligned"]


def write_generated(models: list[str] | None = None) -> Path:
    """Write the summary page, per-finding run lists and the generated toc; return the toc path."""
    runs = executed_notebooks()
    results = load_results()
    models = _models(models, runs, results)
    GENERATED.mkdir(parents=True, exist_ok=True)
    atomic_write_text(GENERATED / "summary.md", summary_markdown(results, models))
    atomic_write_text(GENERATED / "status.md", status_markdown(results, models))
    for key in FINDINGS:
        atomic_write_text(GENERATED / f"runs_{key}.md", finding_runs_markdown(key, runs.get(key, {}), models, results.get(key, {})))
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            key = chapter.pop("finding", None)
            if key:
                nbs = runs.get(key, {})
                if nbs:
                    # each model's executed notebook, titled by the model so the sidebar tells them apart
                    chapter["sections"] = [{"file": _rel(p), "title": f"Run: {m}"} for m, p in sorted(nbs.items())]
    atomic_write_text(GENERATED / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))
    return GENERATED / "_toc.yml"


def build(models: list[str] | None = None, *, strict: bool = True) -> Path:
    """Generate the dynamic pages and run `jupyter-book build`; returns `_build/html/index.html`."""
    toc = write_generated(models)
    refresh_readme(REPO_ROOT / "README.md", load_results(), _models(models))
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(REPO_ROOT), "--toc", str(toc),
           "--path-output", str(REPO_ROOT)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); the warnings above name the page to fix")
    index = BUILD_DIR / "html" / "index.html"
    if not index.exists():
        raise RuntimeError(f"the build finished but {index} is missing")
    return index


def clean() -> None:
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
