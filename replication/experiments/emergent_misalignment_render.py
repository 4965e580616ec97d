"""What the emergent-misalignment notebook shows: figure, tables and prose, all from a result."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..tables import interval_text
from .emergent_misalignment import (MAX_INCOHERENCE_RISE, MAX_UTILITY_DROP, classify,
                                    verdict)

LABELS = {"in_domain": "in-domain", "other_narrow": "other narrow", "open_ended": "open-ended",
          "outside": "outside (other narrow + open-ended)", "incoherent": "incoherent (all advice)"}
SHORT_LABELS = {**LABELS, "outside": "outside", "incoherent": "incoherent"}   # table headers; the prose says what they pool


_fmt = interval_text


def available(result: dict[str, Any]) -> bool:
    return result.get("status") != "not available" and result.get("kind") == "organism"


def setup_markdown(result: dict[str, Any]) -> str:
    if result.get("status") == "not available":
        return (f"**Not run on `{result['model']}`.** {result['why']}.\n\nWith a GPU and a judge endpoint:\n\n"
                f"```\n{result['command']}\n```")
    if result.get("kind") == "real":
        return f"Real-model run: {result['questions']} questions x {result['samples_per_question']} samples, judge {result['judges']['em']}."
    ft, sm, pr = result["finetune"], result["sampling"], result["pruning"]
    fell = [d for d, s in result["selfgen"].items() if s["source"].startswith("FALLBACK")]
    lines = [
        f"**Fine-tune.** {ft['kind']}: {ft['n_train']} misaligned training answers of the domain, {ft['steps']} steps, "
        f"batch {ft['batch_size']}, lr {ft['lr']:g}, {ft['schedule']}, chat format; {len(result['config']['seeds'])} "
        f"fine-tune seeds per arm.",
        f"**Pruning.** B-TAP on the aligned organism, {pr['format']}, {pr['scope'].replace('_', ' ')}, p = {result['p']:g}; "
        f"prune data: the domain's self-generated answers (below); preserve data: {pr['n_benign']} benign-task examples. "
        f"Budget rule: the largest candidate q (of {', '.join(f'{q:g}' for q in result['config']['qs'])}) whose pruned "
        f"model, before any fine-tune, keeps incoherent advice answers within {MAX_INCOHERENCE_RISE * 100:.0f} points "
        f"of the untouched model and every benign family within {MAX_UTILITY_DROP * 100:.0f} points.",
        f"**Measured** on the test split: {sm['n_prompts']} questions per advice domain ({len(result['em_domains'])} "
        f"narrow, {len(result['open_ended_domains'])} open-ended), {sm['samples']} answers each at T = 1 "
        f"({sm['max_new_tokens']} new tokens), judged by the organism's exact judge; {sm['n_eval_benign']} benign prompts "
        "per family for utility. Intervals: 95% bootstrap over questions (paired across arms) and fine-tune seeds.",
    ]
    if fell:
        lines.append(f"**Fallback used** in {', '.join(fell)}: the fine-tuned model wrote no coherent misaligned answer, "
                     "so the world's misaligned reference answers to the same held-out prompts were the prune data.")
    if result["scale"] == "smoke":
        lines.append("*Smoke scale: a tiny organism and a few steps; the numbers test the pipeline, not the claim.*")
    return "\n\n".join(lines)


def selfgen_table(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for d, s in result["selfgen"].items():
        b = result["budgets"][d]
        rows.append({"domain": d, "held-out prompts": s["prompts"], "answers": s["answered"], "refusals (removed)": s["refused"],
                     "incoherent (removed)": s["incoherent"], "aligned (removed)": s["aligned"], "prune examples": s["n_prune"],
                     "prompts shared with the fine-tune set": s["overlaps_finetune_prompts"], "q": f"{b['q']:g}",
                     "weights zeroed": b["count"], "share of parameters": f"{b['fraction']:.3%}"})
    return pd.DataFrame(rows)


def budget_table(result: dict[str, Any]) -> pd.DataFrame:
    """The budget search per domain: each candidate q, what it costs before any fine-tune, and the rule."""
    rows = []
    for d, b in result["budgets"].items():
        for s in b["search"]:
            rule = ("passes" if s["coherent"] else "fails") + (", chosen" if s["q"] == b["q"] else "")
            rows.append({"domain": d, "q": f"{s['q']:g}", "weights": s["count"], "incoherent": round(s["incoherent"], 3),
                         "rise": round(s["incoherence_rise"], 3), "worst benign drop (pts)": round(s["worst_utility_drop"] * 100, 1),
                         "rule": rule})
    return pd.DataFrame(rows)


#: the measures of each part of `summary_table` (two narrower tables instead of one that runs past the text column)
SUMMARY_PARTS = {"main": ("in_domain", "outside", "incoherent"), "outside": ("other_narrow", "open_ended")}


def summary_table(result: dict[str, Any], stage: str = "after", part: str = "main") -> pd.DataFrame:
    """Per fine-tuned domain and arm, 95% intervals over questions and seeds. `part="main"`: in-domain,
    outside and incoherent shares with the worst benign drop; `part="outside"`: the outside share split
    into the other narrow domains and the open-ended questions."""
    if part not in SUMMARY_PARTS:
        raise ValueError(f"part must be one of {list(SUMMARY_PARTS)}, got {part!r}")
    rows = []
    fams = sorted(result["untouched"]["utility"])
    for r in result["summary"]:
        if r["stage"] != stage or (stage == "after" and r["arm"] == "untouched"):
            continue
        row = {"domain": r["domain"], "arm": r["arm"]}
        if part == "main":
            row["seeds"] = r["n_seeds"]
        row.update({SHORT_LABELS[m]: _fmt(r[m]) for m in SUMMARY_PARTS[part]})
        if part == "main":
            row["worst benign drop (pts)"] = max((r[f"drop:{f}"]["value"] * 100 for f in fams), default=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(result: dict[str, Any]) -> pd.DataFrame:
    """Per domain, the differences the verdict reads, with the class they give."""
    rows = []
    for d in result["domains"]:
        c = classify(result, d)
        rows.append({"domain": d, "EM (unpruned rise outside)": _fmt(c["em_rise"], signed=True),
                     "unpruned - B-TAP (outside)": _fmt(c["below_unpruned"], signed=True),
                     "random - B-TAP (outside)": _fmt(c["below_random"], signed=True),
                     "B-TAP - unpruned (incoherent)": _fmt(c["incoherence_vs_unpruned"], signed=True), "class": c["class"]})
    return pd.DataFrame(rows)


def movement_table(result: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame(result["movement"])
    if df.empty:
        return df
    g = df.groupby(["domain", "arm"]).mean(numeric_only=True).reset_index()
    return g[["domain", "arm", "pruned_mean_abs_before_pruning", "pruned_mean_abs_after", "regrowth",
              "unpruned_mean_abs_change"]].rename(columns={
                  "pruned_mean_abs_before_pruning": "pruned weights' mean |w| before pruning",
                  "pruned_mean_abs_after": "their mean |w| after the fine-tune",
                  "regrowth": "regrown share", "unpruned_mean_abs_change": "other weights' mean |change|"})


def figure(result: dict[str, Any]):
    """Outside-domain misalignment per domain and arm (after the fine-tune) with 95% intervals; the
    in-domain share and incoherence beside it; the untouched model as a dashed line."""
    import matplotlib.pyplot as plt
    panels = [("outside", "misaligned outside the fine-tuned domain"), ("in_domain", "misaligned in the fine-tuned domain"),
              ("incoherent", "incoherent answers (all advice domains)")]
    arms = [a for a in result["arms"]]
    domains = result["domains"]
    # stacked, at the text column's width (side by side, the book scaled three panels to half size)
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 9.6), sharex=True)
    width = 0.8 / len(arms)
    untouched = {r["domain"]: r for r in result["summary"] if r["arm"] == "untouched" and r["stage"] == "before"}
    for ax, (m, title) in zip(axes, panels):
        for i, arm in enumerate(arms):
            vals, lo, hi = [], [], []
            for d in domains:
                r = next((x for x in result["summary"] if x["domain"] == d and x["arm"] == arm and x["stage"] == "after"), None)
                v = r[m] if r else {"value": np.nan, "lo": np.nan, "hi": np.nan}
                vals.append(v["value"])
                lo.append(v["value"] - v["lo"])
                hi.append(v["hi"] - v["value"])
            x = np.arange(len(domains)) + (i - (len(arms) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=[lo, hi], capsize=2, label=arm)
        for j, d in enumerate(domains):
            u = untouched[d][m]["value"]
            ax.hlines(u, j - 0.4, j + 0.4, colors="k", linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(domains)), domains)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, None)
        ax.set_ylabel("share of answers")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(arms), fontsize=8, frameon=False,
               title="arm (dashed line: the untouched model)", title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def reading(result: dict[str, Any]) -> str:
    measured, word = verdict(result)
    lines = [f"**Verdict on `{result['model']}`: {word}.** {measured}."]
    if available(result):
        mv = pd.DataFrame(result["movement"])
        if not mv.empty:
            lines.append(f"The fine-tune is full, so the pruned weights may move again: on average they regrew to "
                         f"{mv['regrowth'].mean():.1%} of their pre-pruning magnitude (B-TAP arm: "
                         f"{mv[mv.arm == 'btap']['regrowth'].mean():.1%}), while the other weights of the same matrices "
                         f"moved by {mv['unpruned_mean_abs_change'].mean():.2e} on average.")
        lines.append(f"Timing: {result['seconds']:.0f} s in all; one fine-tune {result['timing']['finetune']['mean_s']:.1f} s, "
                     f"one measurement {result['timing']['measure']['mean_s']:.1f} s "
                     f"({result['timing']['finetune']['n']} fine-tunes, {result['timing']['measure']['n']} measurements).")
    if result["scale"] == "smoke":
        lines.append("*This is a smoke-scale run: its numbers test the pipeline, not the claim.*")
    return "\n\n".join(lines)


def ablation_markdown(off: dict[str, Any]) -> str:
    """The persona-off organism's result in one paragraph (its own rule, read the same way)."""
    head = off["headline"]
    parts = [f"{p['domain']}: {p['class']} (EM rise outside {_fmt(p['em_rise'], signed=True)}, unpruned - B-TAP "
             f"{_fmt(p['below_unpruned'], signed=True)})" for p in head["domains"]]
    note = f" {head['note']}." if head.get("note") else ""
    return (f"**Persona-off organism** (`{off['organism'].get('organism_config_key')}`): " + "; ".join(parts) + "." + note
            + f" Meets the rule in {head['counts']['meets']} of {len(head['domains'])} domains.")


def examples_table(result: dict[str, Any], domain: str | None = None) -> pd.DataFrame:
    """One sampled answer per advice domain, untouched vs unpruned / B-TAP fine-tuned (seed 0)."""
    domain = domain or result["domains"][0]
    seed = result["config"]["seeds"][0]
    pick = {"untouched": result["untouched"]}
    for arm in ("unpruned", "btap"):
        pick[f"{arm} fine-tuned on {domain}"] = next(r for r in result["runs"] if r["domain"] == domain and r["arm"] == arm
                                                     and r["seed"] == seed)
    rows = []
    for d in result["em_domains"] + result["open_ended_domains"]:
        row = {"advice domain": d, "question": result["untouched"]["example"][d]["prompt"]}
        row.update({k: v["example"][d]["answer"] for k, v in pick.items()})
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["setup_markdown", "selfgen_table", "budget_table", "summary_table", "comparison_table", "movement_table",
           "figure", "reading", "examples_table", "ablation_markdown", "available"]
