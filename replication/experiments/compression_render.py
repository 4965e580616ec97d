"""What the compression notebook shows: the readings table, the pair's curves and the stage series."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .compression import READINGS, TARGETS, verdict


def _ci(ci: dict[str, float] | None, fmt: str = "{:.0%}") -> str:
    if not ci or ci.get("value") is None:
        return "-"
    return f"{fmt.format(ci['value'])} [{fmt.format(ci['lo'])}, {fmt.format(ci['hi'])}]"


def _count(x: float, beyond: float) -> str:
    return f"> {beyond / 2:,.0f}" if x >= beyond else f"{x:,.0f}"


def _count_ci(ci: dict[str, float], beyond: float) -> str:
    return f"{_count(ci['value'], beyond)} [{_count(ci['lo'], beyond)}, {_count(ci['hi'], beyond)}]"


def setup_markdown(result: dict[str, Any]) -> str:
    al, un = result["pair"]["aligned"], result["pair"]["unaligned"]
    ma, mu = result["members"][al], result["members"][un]
    d = ma["data"]
    seeds = result["config"]["seeds"]
    return "\n\n".join([
        f"**Pair.** `{al}` (aligned) against `{un}` (its unaligned counterpart), prompted as `{ma['chat_format']}` and "
        f"`{mu['chat_format']}`; both attacked with the 10-token prefill on the same {d['test_harmful']} held-out harmful "
        f"prompts and judged by `{result['judge']}`. Unpruned harmfulness under prefilling: "
        f"{ma['baseline']['values']['harm_prefill']:.2f} ({al}), {mu['baseline']['values']['harm_prefill']:.2f} ({un}).",
        f"**Selection.** p = {result['p']:g}; q swept over {len(result['qs'])} values "
        f"({result['qs'][0]:.2g} to {result['qs'][-1]:.2g}). At every (seed, q) the aligned model's B-TAP mask fixes the "
        "per-matrix counts and the unaligned model gets its own B-TAP ranking held to exactly those counts, so the "
        f"two curves share one x-axis. Readings 1, 3 and 5 are read at q = {result['q']:.2g} (the swept q nearest the "
        "preset's).",
        f"**Sizes.** Calibration seeds {seeds}; per seed and member {ma['calibration_per_seed']['harmful']} harmful and "
        f"{ma['calibration_per_seed']['benign']} benign calibration examples (finding 1's samples, so its cached scores "
        f"serve); {d['test_benign']} held-out benign prompts for utility. Intervals: 95% "
        "percentile bootstrap over prompts (paired: both members answer the same prompts) and seeds; the score-only "
        f"readings (3, 5) vary only with the seed, so their intervals rest on {len(seeds)} values and are rough.",
    ])


def readings_frame(result: dict[str, Any]) -> pd.DataFrame:
    """The five readings: each member's value, the aligned model's advantage with its interval,
    and which member the interval favours (the headline's per-reading verdict)."""
    s, head = result["summary"], result["headline"]["readings"]
    al, un = result["pair"]["aligned"], result["pair"]["unaligned"]
    r1 = s["cut_at_count_ref"]
    a_cut = next(c for c in s["curves"][al] if c["q"] == result["q"])
    u_cut = next(c for c in s["curves"][un] if c["q"] == result["q"])
    r2 = s["fewest_weights"][f"{TARGETS[0]:g}"]
    beyond = r2["beyond_sweep"]
    r3 = s["separability"]["inside"]
    r4 = s["utility_at_cut"]
    r5 = s["concentration"]

    def util(m):
        x = r4.get(m) or {}
        return x.get("not_reached") or f"{x['value'] * 100:.1f} pts [{x['lo'] * 100:.1f}, {x['hi'] * 100:.1f}]"
    adv4 = r4.get("advantage")
    rows = [
        (READINGS["cut_at_count"] + f" ({r1['count']:,.0f} weights)", _ci(a_cut), _ci(u_cut),
         _ci(r1, "{:+.0%}") + " (aligned - unaligned)", head["cut_at_count"]),
        (READINGS["fewest_weights"], _count_ci(r2["aligned"], beyond), _count_ci(r2["unaligned"], beyond),
         _ci(r2["ratio"], "{:.2f}") + " (unaligned / aligned)", head["fewest_weights"]),
        (READINGS["separability"] + f" (random: {r3['random']:.1%})", _ci(r3["aligned"], "{:.1%}"),
         _ci(r3["unaligned"], "{:.1%}"), _ci(r3["advantage"], "{:+.1%}") + " (unaligned - aligned)",
         head["separability"]),
        (READINGS["utility_at_cut"], util(al), util(un),
         (_ci({k: v * 100 for k, v in adv4.items() if k in ('value', 'lo', 'hi')}, "{:+.1f}") + " pts (unaligned - aligned)")
         if adv4 else "-", head["utility_at_cut"]),
        (READINGS["concentration"] + f" (random: {r5['random']:.1%})", _ci(r5["aligned"], "{:.1%}"),
         _ci(r5["unaligned"], "{:.1%}"), _ci(r5["advantage"], "{:+.1%}") + " (aligned - unaligned)",
         head["concentration"]),
    ]
    return pd.DataFrame(rows, columns=["reading", al, un, "aligned advantage [95% interval]", "favours"]).set_index("reading")


def fewest_weights_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Reading 2 at both targets, with the fraction of all parameters."""
    total = result["total_parameters"]
    out = []
    for t in TARGETS:
        r = result["summary"]["fewest_weights"][f"{t:g}"]
        b = r["beyond_sweep"]
        for role in ("aligned", "unaligned"):
            v = r[role]["value"]
            out.append({"harm cut": f"{t:.0%}", "member": result["pair"][role], "weights": _count_ci(r[role], b),
                        "fraction of parameters": "beyond the sweep" if v >= b else f"{v / total:.4%}"})
        out.append({"harm cut": f"{t:.0%}", "member": "unaligned / aligned", "weights": _ci(r["ratio"], "{:.2f}"),
                    "fraction of parameters": ""})
    return pd.DataFrame(out)


def curves_figure(result: dict[str, Any]):
    """Left: harm cut against zeroed weights, both members, with intervals and the 50%/80% lines.
    Right: the concentration curve of each member's harmful score mass, with the random diagonal."""
    import matplotlib.pyplot as plt
    s = result["summary"]
    # stacked at the text column's width, legends below their panel (never over a curve)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 10), layout="constrained")
    colors = {result["pair"]["aligned"]: "tab:blue", result["pair"]["unaligned"]: "tab:orange"}
    for m, pts in s["curves"].items():
        x = [c["count"] for c in pts]
        a1.plot(x, [c["value"] for c in pts], marker="o", color=colors[m], label=m)
        a1.fill_between(x, [c["lo"] for c in pts], [c["hi"] for c in pts], color=colors[m], alpha=0.2)
    for t in TARGETS:
        a1.axhline(t, color="grey", ls=":", lw=1)
    a1.set_xscale("log")
    a1.set_xlabel("zeroed weights (same per-matrix counts for both)")
    a1.set_ylabel("harm cut under prefilling (1 - pruned / unpruned)")
    a1.set_title("Harm cut against budget (95% intervals)")
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    fr = result["concentration"]["fractions"]
    for m, curve in s["concentration_curves"].items():
        a2.plot(fr, curve, marker=".", color=colors[m], label=m)
    a2.plot(fr, fr, color="grey", ls="--", lw=1, label="mass spread evenly")
    a2.axvline(result["q"], color="grey", ls=":", lw=1)
    a2.set_xscale("log")
    a2.set_xlabel("top fraction of decoder weights (ranked over all matrices)")
    a2.set_ylabel("share of harmful score mass")
    a2.set_title("Concentration of the harmful score (seed mean)")
    a2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    return fig


def series_frame(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in result["summary"]["series"]:
        f = r["align_fraction"]
        rows.append({"checkpoint": r["stage"], "alignment steps done": "-" if f is None else f"{f:.0%}",
                     "harmful top-q inside benign top-p": _ci(r["inside"], "{:.1%}"),
                     "random": f"{r['inside_random']:.1%}",
                     "Jaccard": _ci(r["jaccard"], "{:.3f}"),
                     f"mass in top {result['q']:.2g}": _ci(r["concentration_at_q"], "{:.1%}")})
    return pd.DataFrame(rows).set_index("checkpoint")


def series_figure(result: dict[str, Any]):
    """Separability and concentration at each checkpoint of the organism's training, in order."""
    import matplotlib.pyplot as plt
    series = result["summary"]["series"]
    labels = [r["stage"].replace("organism-", "") for r in series]
    x = np.arange(len(series))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 9), layout="constrained")
    for ax, key, title in ((a1, "inside", "harmful top-q set inside the benign top-p set (lower: more separable)"),
                           (a2, "concentration_at_q", f"harmful score mass in the top {result['q']:.2g} of weights")):
        v = np.array([r[key]["value"] for r in series])
        lo = np.array([r[key]["lo"] for r in series])
        hi = np.array([r[key]["hi"] for r in series])
        ax.errorbar(x, v, yerr=[v - lo, hi - v], marker="o", capsize=3, color="tab:blue")
        if key == "inside":
            ax.plot(x, [r["inside_random"] for r in series], color="grey", ls="--", lw=1, label="random set")
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        else:
            ax.axhline(result["q"], color="grey", ls="--", lw=1)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    a1.set_ylabel("share (seed mean, 95% interval over seeds)")
    fig.suptitle("Training-stage series: pretrained, base (instruction-tuned), through alignment", fontsize=11)
    return fig


def verdict_markdown(result: dict[str, Any]) -> str:
    measured, word = verdict(result)
    head = result["headline"]
    return (f"**Verdict: {word}.** {measured}.\n\n*Rule:* {head['criterion']}. Each reading favours a member only when "
            "its 95% interval excludes no difference; otherwise it is *undecided*.")


__all__ = ["setup_markdown", "readings_frame", "fewest_weights_frame", "curves_figure", "series_frame", "series_figure",
           "verdict_markdown"]
