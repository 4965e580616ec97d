"""Figures the notebooks show. Each function takes plain numbers and returns a matplotlib Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt


def nll_profile_figure(profiles: Mapping[str, Sequence[float]], *, title: str = "Per-position NLL of held-out responses",
                       skip_line: int | None = 10):
    """Mean NLL at each response position, one line per (model, data) curve; one panel per
    scoring format when the labels end in `raw/...` or `chat/...`.

    A profile that is ~0 past the first tokens means the content is memorised: gradient scores
    would then rank only the comply-or-refuse decision (organism-notes.md).
    """
    groups: dict[str, dict[str, Sequence[float]]] = {}
    for label, values in profiles.items():
        head, _, tail = label.rpartition(" ")
        fmt = tail.split("/", 1)[0] if "/" in tail else ""
        groups.setdefault(fmt, {})[f"{head} {tail.split('/', 1)[-1]}".strip()] = values
    # one panel per format, stacked at the text column's width; legends outside the curves
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 3.4 * len(groups)), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (fmt, curves) in zip(axes[:, 0], groups.items()):
        for label, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_ylim(bottom=0)
        if skip_line:
            ax.axvline(skip_line + 0.5, color="grey", ls=":", lw=1)
            ax.text(skip_line + 0.7, 0.02, "prefill ends", color="grey", fontsize=8)
        ax.set_xlabel("response token position")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_ylabel("mean NLL (nats, symlog)")
        ax.set_title(f"{fmt} format" if fmt else "", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def profile_summary(profiles: Mapping[str, Sequence[float]], start: int = 10) -> dict[str, dict[str, float]]:
    """Per curve: NLL at the first response token, and the mean NLL past position `start` (the part
    of a response a 10-token prefill does not give away)."""
    import math
    out = {}
    for label, values in profiles.items():
        tail = [v for v in values[start:] if not math.isnan(v)]
        out[label] = {"position 1": float(values[0]) if values else float("nan"),
                      f"mean past position {start}": sum(tail) / len(tail) if tail else float("nan")}
    return out


def compactness_figure(summary_rows: Sequence[dict], baseline: dict, total_parameters: int, *,
                       utility_metrics: Sequence[str] | None = None,
                       title: str = "Harmfulness and utility against the fraction of parameters zeroed",
                       harm_label: str = "harmfulness (exact judge)",
                       utility_label: str = "utility (accuracy; dotted: unpruned)"):
    """Left: harmfulness under prefilling (and refusal ablation + prefilling) for B-TAP and its
    baselines; right: each utility measure for B-TAP. Error bars: 95% bootstrap intervals over
    prompts and seeds. Top axis: the absolute number of weights zeroed. `baseline` is the result's
    `baseline` (`values` of the unpruned model)."""
    arms = {"btap": ("B-TAP (paper settings)", "C0", "-"), "random": ("random, same count", "grey", "--"),
            "control": ("control task, same count", "C2", "--"), "btap_global": ("ablation: global", "C4", ":"),
            "btap_skip10": ("ablation: skip 10 tokens", "C5", ":"), "btap_chat": ("ablation: chat format", "C6", ":")}
    values = baseline["values"]
    util = list(utility_metrics or [k for k in values if k.startswith("utility:")])

    def err(rows, name):
        lo = [r[name] - r.get(f"{name}_lo", r[name]) for r in rows]
        hi = [r.get(f"{name}_hi", r[name]) - r[name] for r in rows]
        return [lo, hi]

    # stacked, each panel the text column's width, legends below their panel (never over a curve)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7.5, 10.5), sharex=True, layout="constrained")
    for arm, (label, color, ls) in arms.items():
        rows = sorted((r for r in summary_rows if r["arm"] == arm), key=lambda r: r["fraction"])
        rows = [r for r in rows if r["fraction"] > 0]
        if not rows:
            continue
        x = [r["fraction"] for r in rows]
        ax1.errorbar(x, [r["harm_prefill"] for r in rows], yerr=err(rows, "harm_prefill"), color=color, ls=ls,
                     marker="o", ms=3, capsize=2, label=f"{label}: prefilling")
        if arm == "btap" and all("harm_ra_prefill" in r for r in rows):
            ax1.errorbar(x, [r["harm_ra_prefill"] for r in rows], yerr=err(rows, "harm_ra_prefill"), color=color,
                         ls="-.", marker="s", ms=3, capsize=2, label=f"{label}: refusal ablation + prefilling")
        if arm == "btap":
            for i, name in enumerate(util):
                ys = [r.get(name, float("nan")) for r in rows]
                # the utility interval is the paired drop's, placed around the pruned value
                lo = [r.get(f"drop:{name}_hi", r.get(f"drop:{name}", 0)) - r.get(f"drop:{name}", 0) for r in rows]
                hi = [r.get(f"drop:{name}", 0) - r.get(f"drop:{name}_lo", r.get(f"drop:{name}", 0)) for r in rows]
                ax2.errorbar(x, ys, yerr=[lo, hi], marker="o", ms=3, capsize=2, color=f"C{i}",
                             label=name.removeprefix("utility:"))
                ax2.axhline(values[name], color=f"C{i}", lw=0.6, ls=":")
    ax1.axhline(values["harm_prefill"], color="k", lw=0.8, ls=":", label="unpruned (prefilling)")
    for ax, ylabel in ((ax1, harm_label), (ax2, utility_label)):
        ax.set_xscale("log")
        ax.set_xlabel("fraction of all parameters zeroed")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    top = ax1.secondary_xaxis("top", functions=(lambda f: f * total_parameters, lambda c: c / total_parameters))
    top.set_xlabel("weights zeroed")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig
