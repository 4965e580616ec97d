"""What the positive-control notebook shows: the planting, finding 1's sweep on it, the overlap with the planted set."""
from __future__ import annotations

from typing import Any

import pandas as pd

from .positive_control import verdict


def planting_markdown(result: dict[str, Any]) -> str:
    log, cfg = result["plant"], result["config"]["plant"]
    d = result["planted_data"]
    return (f"**Planting.** {log['planted_weights']:,} weights ({cfg['fraction']:.2%} of every decoder matrix, "
            f"{log['planted_weights'] / result['sweep']['total_parameters']:.3%} of all parameters) may change; "
            f"{cfg['steps']} steps of {cfg['batch_size']} at lr {cfg['lr']:g} (mix {dict(cfg['mix'])}), final loss "
            f"{log['final_loss']:.3f}, {log['seconds']:.0f} s. Weights that moved outside the planted set: "
            f"{log['moved_outside']} (must be 0). Planted data: {d['train']} training answers; {d['test']} held-out "
            f"prompts, all from {d['held_out_combinations']} (target, method) combinations and people never seen in "
            "training, so a correct answer needs the planted knowledge, not recall.")


def states_frame(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, s in result["states"].items():
        rows.append({"model": name, "planted harm, prefill": s["planted_harm_prefill"],
                     "planted harm, no attack": s["planted_harm_none"], "refusal (world categories)": s["world_refusal"],
                     "utility (mean of families)": sum(s["utility"].values()) / max(1, len(s["utility"]))})
    o = result["oracle"]
    rows.append({"model": f"planted, the planted set zeroed ({o['count']:,} weights)", "planted harm, prefill": o["harm_prefill"],
                 "planted harm, no attack": None, "refusal (world categories)": None,
                 "utility (mean of families)": sum(o["utility"].values()) / max(1, len(o["utility"]))})
    return pd.DataFrame(rows).set_index("model").round(3)


def sweep_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Finding 1's B-TAP and random rows on the planted category, with the overlap with S."""
    ov = {}
    for o in result["overlaps"]:
        ov.setdefault(o["q"], []).append(o)
    rows = []
    for r in result["sweep"]["summary"]:
        if r["arm"] not in ("btap", "random"):
            continue
        row = {"arm": r["arm"], "q": f"{r['q']:.2g}", "weights": int(round(r["count"])),
               "harm cut [95%]": f"{r.get('harm_prefill_cut', float('nan')):.0%} [{r.get('harm_prefill_cut_lo', float('nan')):.0%}, "
                                 f"{r.get('harm_prefill_cut_hi', float('nan')):.0%}]"}
        os_ = ov.get(r["q"], [])
        if os_ and r["arm"] == "btap":
            row["inside planted set"] = f"{sum(o['inside'] for o in os_) / len(os_):.0%}"
            row["chance"] = f"{sum(o['inside_chance'] for o in os_) / len(os_):.1%}"
            row["planted set recovered"] = f"{sum(o['recall'] for o in os_) / len(os_):.0%}"
        elif os_:
            row["inside planted set"] = f"{sum(o['random'] for o in os_) / len(os_):.1%}"
        drops = [k for k in r if k.startswith("drop:") and not k.endswith(("_lo", "_hi"))]
        if drops:
            row["largest utility drop (pts)"] = f"{max(r[k] for k in drops) * 100:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def verdict_markdown(result: dict[str, Any]) -> str:
    measured, word = verdict(result)
    return (f"**Finding 1's verdict on the planted category: {word}.** {measured}.\n\n"
            "Read as a control: *reproduced* here means the pipeline can detect a compact mechanism when one exists; "
            "anything else means a negative result elsewhere in this book may be the pipeline's blind spot.")


__all__ = ["planting_markdown", "states_frame", "sweep_frame", "verdict_markdown"]
