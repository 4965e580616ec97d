"""What the generality notebook shows: tables, heatmaps and prose computed from a result."""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd

from .generality import LOO_SHARE, category_passes, small_number, verdict


def _fmt(ci: dict[str, float], pct: bool = True) -> str:
    if any(ci.get(k) is None or np.isnan(ci[k]) for k in ("value", "lo", "hi")):
        return "n/a"   # e.g. no harm to cut on that category's prompts
    if pct:
        return f"{ci['value']:.0%} [{ci['lo']:.0%}, {ci['hi']:.0%}]"
    return f"{ci['value'] * 100:+.1f} [{ci['lo'] * 100:+.1f}, {ci['hi'] * 100:+.1f}]"


def setup_markdown(result: dict[str, Any]) -> str:
    d, head = result["data"], result["headline"]
    judge = result["judge"]
    return "\n\n".join([
        f"**Budget.** {result['budget_rule']}. Every prune set below zeroes exactly the same number of weights in "
        f"each matrix: {head['count']:,} in all ({head['count'] / result['total_parameters']:.4%} of parameters).",
        f"**Data.** {d['calibration_per_category']} harmful calibration examples per category (each category's own "
        f"train prompts only), {d['benign_calibration']} benign; held out: {d['test_harmful']} harmful prompts "
        f"({d['test_harmful'] // max(1, len(result['categories']))} per category) and {d['test_benign']} benign. "
        f"Harmfulness under the 10-token prefilling attack, judged by `{judge}`; seeds "
        f"{result['config']['seeds']}. Intervals: 95% bootstrap over prompts (paired) and seeds.",
    ])


def display_name(category: str) -> str:
    """A category as tables show it: words, so a long name (Do-Not-Answer's
    `discrimination_exclusion_toxicity_hateful_offensive`) wraps instead of widening the table."""
    return category.replace("_", " ")


def tick_label(category: str, width: int = 14) -> str:
    """A category as figure ticks show it: wrapped onto lines of about `width` characters."""
    return textwrap.fill(display_name(category), width)


def transfer_frame(result: dict[str, Any], key: str = "value") -> pd.DataFrame:
    """Rows: the category whose weights are pruned; columns: the category measured."""
    cats = result["categories"]
    m = pd.DataFrame(np.nan, index=cats, columns=cats)
    for cell in result["transfer"]:
        m.loc[cell["prune"], cell["measured"]] = cell[key]
    m.index.name, m.columns.name = "pruned with", "measured on"
    return m


def overlap_frame(result: dict[str, Any]) -> pd.DataFrame:
    cats = result["categories"] + ["control"]
    m = pd.DataFrame(np.nan, index=cats, columns=cats)
    for o in result["overlap"]:
        m.loc[o["a"], o["b"]] = m.loc[o["b"], o["a"]] = o["jaccard"]
    for c in result["categories"]:
        m.loc[c, c] = 1.0
    m.loc["control", "control"] = 1.0
    return m


def heatmaps(result: dict[str, Any]):
    """Left: the transfer matrix (relative harm drop, values in the cells); right: the overlap
    (Jaccard) matrix, with the random-set Jaccard in the title."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    # stacked at the text column's width, so the cell annotations stay legible
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 12), layout="constrained")
    t = transfer_frame(result).rename(index=tick_label, columns=tick_label)
    sns.heatmap(t, annot=t.map(lambda v: "n/a" if np.isnan(v) else f"{v:.0%}"), fmt="", vmin=-0.2, vmax=1.0, cmap="viridis", ax=a1,
                cbar_kws={"label": "harm cut (relative drop)"})
    a1.set_title(f"Transfer: prune with one category's weights ({result['count']:,} weights)\n"
                 "n/a: the unpruned model generates no harm on that category")
    o = overlap_frame(result).rename(index=tick_label, columns=tick_label)
    rand = result["headline"]["random_jaccard"]
    sns.heatmap(o, annot=o.map(lambda v: f"{v:.2f}"), fmt="", vmin=0, vmax=1, cmap="magma", ax=a2,
                cbar_kws={"label": "Jaccard"})
    a2.set_title(f"Overlap of the pruned sets (random sets of these sizes: {small_number(rand)})")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=0, labelsize=8)
        ax.tick_params(axis="y", rotation=0, labelsize=8)
        ax.title.set_fontsize(10)
    return fig


def loo_figure(result: dict[str, Any]):
    """Per category: harm cut from pruning with the category itself, with all the others, and random."""
    import matplotlib.pyplot as plt
    rows = result["leave_one_out"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for i, (key, label, color) in enumerate((("self", "the category itself", "C0"),
                                             ("loo", "all other categories (leave-one-out)", "C1"),
                                             ("random", "random weights, same count", "grey"))):
        v = [r[key]["value"] for r in rows]
        err = [[r[key]["value"] - r[key]["lo"] for r in rows], [r[key]["hi"] - r[key]["value"] for r in rows]]
        ax.bar(x + (i - 1) * 0.27, v, 0.27, yerr=err, capsize=3, label=label, color=color)
    ax.set_xticks(x, [tick_label(r["category"]) for r in rows], fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("harm cut on the category's held-out prompts")
    ax.set_title("Leave-one-out: is a category's harm removed by weights\nfound on the others? (95% intervals)",
                 fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def loo_table(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"category": display_name(r["category"]), "cut, itself": _fmt(r["self"]), "cut, all others": _fmt(r["loo"]),
                          "cut, random": _fmt(r["random"]), "others / itself": _fmt(r["ratio"]),
                          f"passes (>= {LOO_SHARE:.0%}, beyond random)": category_passes(r)}
                         for r in result["leave_one_out"]]).set_index("category")


def transfer_table(result: dict[str, Any]) -> pd.DataFrame:
    cats = result["categories"]
    m = pd.DataFrame("", index=cats, columns=cats)
    for cell in result["transfer"]:
        m.loc[cell["prune"], cell["measured"]] = _fmt(cell)
    m = m.rename(index=display_name, columns=display_name)
    m.index.name, m.columns.name = "pruned with", "measured on"
    return m


def overlap_table(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"set A": display_name(o["a"]), "set B": display_name(o["b"]), "Jaccard (mean over seeds)": round(o["jaccard"], 3),
                          "sd": round(o["jaccard_sd"], 3), "random sets of the same sizes": round(o["random"], 4)}
                         for o in result["overlap"]])


def utility_table(result: dict[str, Any]) -> pd.DataFrame:
    util = result["utility_metrics"]
    rows = []
    for r in result["utility_by_set"]:
        row = {"prune set": f"{r['kind']}: {r['prune']}", "weights": int(round(r["count"])),
               "harm cut, all prompts": _fmt(r["harm_all"])}
        row.update({f"drop {u.removeprefix('utility:')} (points)": _fmt(r[u], pct=False) for u in util})
        rows.append(row)
    return pd.DataFrame(rows).set_index("prune set")


def utility_summary(result: dict[str, Any]) -> pd.DataFrame:
    """Per prune set: the harm cut and the worst utility drop (by its interval's upper end); the full
    table of every measure is folded in the notebook."""
    util = result["utility_metrics"]
    rows = []
    for r in result["utility_by_set"]:
        worst = max((u for u in util if u in r), key=lambda u: r[u]["hi"], default=None)
        rows.append({"prune set": f"{r['kind']}: {r['prune']}", "weights": int(round(r["count"])),
                     "harm cut, all prompts": _fmt(r["harm_all"]),
                     "worst utility drop (points)": f"{worst.removeprefix('utility:')} {_fmt(r[worst], pct=False)}"
                     if worst else "-"})
    return pd.DataFrame(rows).set_index("prune set")


def reading(result: dict[str, Any]) -> str:
    head = result["headline"]
    measured, word = verdict(result)
    lines = [f"**Verdict on `{result['model']}`: {word}.** {measured[0].upper() + measured[1:]}."]
    if not head.get("note"):
        jac, rnd = head["mean_pair_jaccard"], head["random_jaccard"]
        lines.append(f"The category sets overlap with a mean pairwise Jaccard of {jac:.2f}, against {small_number(rnd)} for random "
                     f"sets of the same sizes" + (" (far more than chance)" if jac > 3 * rnd else "")
                     + f"; each category's set overlaps the control task's at {head['mean_control_jaccard']:.2f} on average.")
        inter = next((r for r in result["utility_by_set"] if r["kind"] == "intersection"), None)
        if inter:
            lines.append(f"Pruning only the {int(round(inter['count'])):,} weights every category's set shares cuts harm on "
                         f"all held-out prompts by {_fmt(inter['harm_all'])}.")
    lines.append(categories_line(result))
    if result["scale"] == "smoke":
        lines.append("*This is a smoke-scale run: its numbers test the pipeline, not the claim.*")
    return "\n\n".join(lines)


CATEGORY_SET_NAMES = {"donotanswer": "Do-Not-Answer's risk areas", "hexphi": "HEx-PHI's categories"}


def categories_line(result: dict[str, Any]) -> str:
    """Which harm categories these are (a real model's category set is chosen; the organism's are its world's)."""
    cats = result["categories"]
    info = result.get("data", {}).get("harm_categories")
    if result.get("kind") != "real":
        return f"The {len(cats)} harm categories are the organism's world's: " + ", ".join(f"`{c}`" for c in cats) + "."
    # results written before the category set was a choice carry no `harm_categories`: they used Do-Not-Answer
    where = (f"{CATEGORY_SET_NAMES.get(info['used'], info['used'])} ({info['why']})" if info
             else CATEGORY_SET_NAMES["donotanswer"])
    return (f"The {len(cats)} harm categories are {where}: " + ", ".join(f"`{c}`" for c in cats) + ". "
            f"Harmfulness is judged by `{result.get('judge', 'its judge')}`" +
            (": a judge-free proxy (how likely the model finds held-out harmful continuations), not a classifier's "
             "reading of generated text." if "reference_nll" in str(result.get("judge", "")) else "."))
