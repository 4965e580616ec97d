"""What the dissociation notebook shows: the capability matrix, overlaps and prose, from a result."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .dissociation import READS, TOLERANCE, intact, verdict


def _fmt(ci: dict[str, float] | None) -> str:
    if ci is None:
        return "-"
    return f"{ci['value'] * 100:+.1f} [{ci['lo'] * 100:+.1f}, {ci['hi'] * 100:+.1f}]"


def setup_markdown(result: dict[str, Any]) -> str:
    d = result["data"]
    lines = [f"**Budgets.** {result['budget_rule']}. Every capability's mask uses the same p = {result['p']:g} and q; "
             "their counts differ and are listed below.",
             f"**Data.** {d['calibration_per_capability']} prune examples per capability, {d['benign_calibration']} benign; "
             f"held out: {d['test_harmful']} harmful prompts, {d['test_benign']} benign, {d['test_detection']} detection, "
             f"{d['test_explanation']} explanation prompts. Judge: `{result['judge']}`. Changes are in points "
             "(pruned minus unpruned) with 95% intervals over prompts (paired) and seeds."]
    rec = result.get("recognition")
    if rec:
        dp, ep = rec["detection_pool"], rec["explanation_pool"]
        lines.append(
            f"**Detection and explanation on a real model.** The paper's prompts: detection \"{rec['detection_prompt']} "
            f"...\", the reply prefilled with \"{rec['detection_prefill']}\" and yes/no read as {rec['judge']['detection']}; "
            f"explanation \"{rec['explanation_prompt']} ...\". Note: {rec['negatives']}. Explanations are graded by "
            f"**{rec['judge']['explanation']}**, refusals removed before grading. Held out: {rec['test_detection']['yes']} "
            f"harmful and {rec['test_detection']['no']} benign detection items, {rec['test_explanation']} explanation "
            f"prompts. Prune data, the model's own answers to train prompts: detection {dp['kept_yes']} 'yes' and "
            f"{dp['kept_no']} 'no' kept of {dp['asked']} ({dp['wrong_dropped']} wrong, {dp['refused_dropped']} refusals "
            f"dropped); explanation {ep['asked'] - ep['refused_dropped'] - ep['empty_dropped']} kept of {ep['asked']} "
            f"({ep['refused_dropped']} refusals dropped).")
    if result["not_available"]:
        lines.append("**No prune data on this model:** " + "; ".join(f"{c}: {w}" for c, w in result["not_available"].items())
                     + ". These capabilities are not pruned with; wherever their test set exists they are still measured.")
    return "\n\n".join(lines)


def presence_table(result: dict[str, Any]) -> pd.DataFrame:
    """Each capability of the unpruned model against its chance level: one it does not have is
    reported as absent, and its 'intact after pruning' is not read."""
    return pd.DataFrame([{"capability": c, "measure": READS[c][1], "unpruned": _pct(v), "chance level": f"{v['chance']:.0%}",
                          "graded items": v["n"],
                          "present": "yes" if v["present"] else f"no ({v.get('why', 'not above chance')})"}
                         for c, v in result.get("presence", {}).items()])


def _pct(ci: dict[str, float]) -> str:
    if ci["value"] != ci["value"]:
        return "-"
    return f"{ci['value']:.1%} [{ci['lo']:.1%}, {ci['hi']:.1%}]"


def matrix_frame(result: dict[str, Any], q: float, key: str = "value") -> pd.DataFrame:
    rows = [r for r in result["matrix"] if r["q"] == q]
    cols = [c for c in READS if any(c in r for r in rows)]
    m = pd.DataFrame(np.nan, index=[r["prune"] for r in rows], columns=[READS[c][1] for c in cols])
    for r in rows:
        for c in cols:
            if c in r:
                m.loc[r["prune"], READS[c][1]] = r[c][key] * 100
    m.index.name = "pruned with"
    return m


def heatmap(result: dict[str, Any]):
    import matplotlib.pyplot as plt
    import seaborn as sns
    qs = result["budgets"]
    # one panel per budget, stacked at the text column's width
    fig, axes = plt.subplots(len(qs), 1, figsize=(7.5, 4.6 * len(qs)), squeeze=False, layout="constrained")
    for ax, q in zip(axes[:, 0], qs):
        m = matrix_frame(result, q)
        sns.heatmap(m, annot=m.map(lambda v: "n/a" if np.isnan(v) else f"{v:+.0f}"), fmt="", center=0, vmin=-100,
                    vmax=100, cmap="RdBu_r", ax=ax, cbar_kws={"label": "change from unpruned (points)"})
        count = next(r["count"] for r in result["matrix"] if r["q"] == q and r["prune"] == "generation")
        ax.set_title(f"q = {q:g} (generation's mask: {int(round(count)):,} weights)")
        ax.tick_params(axis="x", rotation=25)
        ax.tick_params(axis="y", rotation=0)
        ax.title.set_fontsize(10)
    return fig


def matrix_table(result: dict[str, Any]) -> pd.DataFrame:
    out = []
    for r in result["matrix"]:
        row = {"q": f"{r['q']:g}", "pruned with": r["prune"], "weights": int(round(r["count"]))}
        row.update({READS[c][1]: _fmt(r.get(c)) for c in READS if c in r})
        row.update({f"drop {u.removeprefix('utility:')}": _fmt(r[f"drop:{u}"]) for u in result["utility_metrics"]})
        out.append(row)
    return pd.DataFrame(out)


def matrix_summary(result: dict[str, Any]) -> pd.DataFrame:
    """The capability changes only (no utility columns), one row per (q, prune set); utility drops and
    the full matrix are folded in the notebook."""
    out = []
    for r in result["matrix"]:
        row = {"q": f"{r['q']:g}", "pruned with": r["prune"], "weights": int(round(r["count"]))}
        row.update({READS[c][1]: _fmt(r.get(c)) for c in READS if c in r})
        out.append(row)
    return pd.DataFrame(out)


def overlap_table(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"q": f"{o['q']:g}", "set A": o["a"], "set B": o["b"], "Jaccard": round(o["jaccard"], 3),
                          "random sets of the same sizes": round(o["random"], 4)} for o in result["overlap"]])


def reading(result: dict[str, Any]) -> str:
    head = result["headline"]
    measured, word = verdict(result)
    lines = [f"**Verdict on `{result['model']}`: {word}.** {measured[0].upper() + measured[1:]}."]
    rp = head.get("refusal_pruning")
    if rp and not head.get("note"):
        parts = [f"{name} {_fmt(rp[k])} points" for k, name in (("refusal_change", "refusal rate"),
                                                                ("compliance_change", "harmfulness with no attack"),
                                                                ("generation_change", "harmfulness under prefilling"))
                 if rp.get(k)]
        lines.append("The other direction (double dissociation): pruning the refusal weights at the same q changed "
                     + ", ".join(parts) + "; refusal "
                     + ("was lowered beyond the tolerance" if intact(rp.get("refusal_change")) is False else
                        f"stayed within {TOLERANCE * 100:.0f} points or its interval holds 0") + ".")
    if result["scale"] == "smoke":
        lines.append("*This is a smoke-scale run: its numbers test the pipeline, not the claim.*")
    return "\n\n".join(lines)
