"""What the compactness notebook shows: tables and prose computed from a result (no logic lives
only in the notebook, and none of this changes a number)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..findings import judge_label
from ..tables import interval_text
from .compactness import ARMS, HARM_CUT, PAPER, SIZE_BOUND, UTILITY_DROP, classify, format_multiple, paper_multiple, size_note


def is_real(result: dict[str, Any]) -> bool:
    return result.get("kind") == "real"


def _ci(lo, hi, pct: bool = False) -> str:
    if lo is None or hi is None:
        return "-"
    return f"[{lo:.0%}, {hi:.0%}]" if pct else f"[{lo:.3f}, {hi:.3f}]"


def measures_markdown(result: dict[str, Any]) -> str:
    """What is measured on this model, by which judge, on how many prompts."""
    d = result["data"]
    sizes = (f"Held out: {d['test_harmful']} harmful test prompts, {d['test_benign']} benign"
             + (f", {d['test_detection']} detection" if d.get("test_detection") else "")
             + (f", {d['test_trivia']} trivia questions" if d.get("test_trivia") else "")
             + f"; {d['calibration_per_seed']['harmful']} calibration examples per side and seed.")
    intervals = ("**Intervals.** Every interval is a 95% percentile bootstrap over the held-out prompts (paired: the "
                 "pruned and the unpruned model answer the same prompts) and, for B-TAP and its baselines, over the "
                 "calibration seeds.")
    if not is_real(result):
        return "\n\n".join([
            "**What is measured.** Harmfulness: the organism's exact judge (the synthetic world is known) reads the "
            "prefill and the greedy continuation of each held-out harmful request, under the prefilling attack and "
            "under refusal ablation + prefilling. Utility: accuracy per benign family and detection accuracy, each "
            "graded by the same exact judge.", sizes, intervals])
    j = result["judges"]
    util = "; ".join(f"`{k}` (judge `{j[k]['judge']}`, {j[k]['n']} prompts)" for k in result["utility_metrics"])
    auto = result["config"].get("judge") == "auto"
    lines = [f"**Judge.** Harmfulness is judged by `{result['judge']}`"
             + ((" (StrongREJECT is not in the local Hugging Face cache, so the judge-free measure stands in for it; "
                 "pass `judge=\"strongreject\"` online to use the paper's classifier): the exp(-mean token NLL) of the "
                 "reference model's held-out harmful answer after its first 10 tokens are prefilled. A drop means the "
                 "pruned model finds those continuations less likely, not that a classifier read less harmful text."
                 if auto else " (chosen in the config).") if result["judge"] == "reference_nll" else "."),
             f"**Utility measures** (each in [0, 1], higher is better, so the {UTILITY_DROP * 100:.0f}-point rule "
             f"applies to each): {util}.",
             f"**Data.** Prune data: `{d['reference_model']}`'s own compliant answers to harmful train prompts "
             f"(Do-Not-Answer's five risk areas as categories, and HarmBench prompts without a category), "
             f"{d['reference_rule']}; preserve data: its answers to the project's benign instructions; control task: "
             f"its answers to the project's trivia questions ({d['control_pool_correct']} of {d['control_pool']} "
             f"correct). {d['test_harmful_refused_dropped']} harmful test prompts were dropped because the reference "
             f"refused, {d['test_harmful_short_dropped']} as too short to prefill.", sizes, intervals]
    if result.get("forward_only_arms"):
        lines.append(f"**Forward only:** arms {', '.join(result['forward_only_arms'])} are measured without generation "
                     "(harm and benign NLL only) to fit the time budget.")
    return "\n\n".join(lines)


def baseline_table(result: dict[str, Any]) -> pd.DataFrame:
    """The unpruned model's numbers with their intervals and judges."""
    from .. import stats
    base, judges = result["baseline"], result["judges"]
    rows = []
    for name, value in base["values"].items():
        ci = stats.mean_interval(base["items"][name]) if base.get("items", {}).get(name) else None
        rows.append({"measure": name, "value": round(value, 3), "95% interval": _ci(ci.lo, ci.hi) if ci else "-",
                     "prompts": judges.get(name, {}).get("n"), "judge": judges.get(name, {}).get("judge")})
    return pd.DataFrame(rows).set_index("measure")


def refusal_ablation_line(result: dict[str, Any]) -> str:
    ra = result["refusal_ablation"]
    if ra["used"]:
        return (f"refusal-ablation mask (Wei et al. set difference, p = q = 0.01, on {ra['calibration']} of the model's "
                f"own refusals): {ra['count']:,} weights")
    return ra["skipped_because"] or "refusal ablation not run"


def axis_labels(result: dict[str, Any]) -> dict[str, str]:
    """Figure axis labels that name the judge."""
    if not is_real(result):
        return {"harm_label": "harmfulness (exact judge)", "utility_label": "utility (accuracy; dotted: unpruned)"}
    return {"harm_label": f"harmfulness ({result['judge']})", "utility_label": "utility, each measure (dotted: unpruned)"}


def _drop(r: dict[str, Any], u: str) -> str:
    return f"{r[f'drop:{u}'] * 100:+.1f} [{r[f'drop:{u}_lo'] * 100:+.1f}, {r[f'drop:{u}_hi'] * 100:+.1f}]"


def _cut(r: dict[str, Any]) -> str:
    if "harm_prefill_cut" not in r:
        return "-"
    return f"{r['harm_prefill_cut']:.0%} {_ci(r['harm_prefill_cut_lo'], r['harm_prefill_cut_hi'], True)}"


def _worst_drop(r: dict[str, Any], util: list[str]) -> str:
    """The utility measure whose drop has the highest upper interval bound, with its drop ("-": none)."""
    worst = max((u for u in util if f"drop:{u}_hi" in r), key=lambda u: r[f"drop:{u}_hi"], default=None)
    return f"{worst.removeprefix('utility:')} {_drop(r, worst)}" if worst else "-"


def sweep_summary(result: dict[str, Any]) -> pd.DataFrame:
    """B-TAP, one row per q: the size (weights, multiple of the paper's 0.001%), the harm cut, the
    worst utility drop (by its interval's upper end) and the criterion; the full tables are folded."""
    util = result["utility_metrics"]
    out = []
    for r in (r for r in result["summary"] if r["arm"] == "btap"):
        out.append({"q": f"{r['q']:g}", "weights": int(round(r["count"])),
                    "x paper's 0.001%": format_multiple(paper_multiple(r['fraction'])), "harm cut": _cut(r),
                    "worst utility drop (points)": _worst_drop(r, util),
                    "criterion": classify(r, util)})
    return pd.DataFrame(out).set_index("q")


def harm_table(result: dict[str, Any]) -> pd.DataFrame:
    """Every arm and q: harmfulness and its cut, with intervals (seed means)."""
    out = []
    for r in result["summary"]:
        row = {"arm": r["arm"], "q": f"{r['q']:g}", "seeds": r["n_seeds"], "weights": int(round(r["count"])),
               "fraction": f"{r['fraction']:.4%}", "harm": round(r["harm_prefill"], 3), "harm cut": _cut(r)}
        if "harm_ra_prefill" in r:
            row["harm, RA + prefill"] = round(r["harm_ra_prefill"], 3)
        out.append(row)
    return pd.DataFrame(out)


def utility_table(result: dict[str, Any]) -> pd.DataFrame:
    """Every arm and q with utility measured: each measure's drop in points with its interval."""
    util = result["utility_metrics"]
    out = []
    for r in result["summary"]:
        drops = {u.removeprefix("utility:"): _drop(r, u) for u in util if f"drop:{u}" in r}
        if drops:
            out.append({"arm": r["arm"], "q": f"{r['q']:g}", **drops})
    return pd.DataFrame(out)


def sweep_table(result: dict[str, Any]) -> pd.DataFrame:
    """Every setting, seed means with intervals: harm, its cut, and each utility drop (points)."""
    util = result["utility_metrics"]
    out = []
    for r in result["summary"]:
        row = {"arm": r["arm"], "q": f"{r['q']:g}", "seeds": r["n_seeds"], "weights": int(round(r["count"])),
               "fraction": f"{r['fraction']:.4%}", "harm": round(r["harm_prefill"], 3), "harm cut": _cut(r)}
        if "harm_ra_prefill" in r:
            row["harm, RA"] = round(r["harm_ra_prefill"], 3)
        for u in util:
            if f"drop:{u}" in r:
                row[f"drop {u.removeprefix('utility:')}"] = _drop(r, u)
        if r["arm"] == "btap":
            row["criterion"] = classify(r, util)
        out.append(row)
    return pd.DataFrame(out)


def determinism_markdown(result: dict[str, Any]) -> str:
    """What the benign (preserve) score can see: the unpruned model's loss on held-out responses past
    position 10, benign against harmful (none: the run did not measure it)."""
    d = result.get("determinism")
    if not d or d.get("benign") is None or d.get("harmful") is None:
        return "**Determinism.** Not measured in this run (config `determinism=False`)."
    k = d["from_position"]
    ratio = d["harmful"] / d["benign"] if d["benign"] else float("inf")
    return (f"**Determinism of the responses the scores see.** Held-out NLL of the unpruned model past response "
            f"position {k} (token-weighted, tokenised as the scores tokenise each side): benign "
            f"**{d['benign']:.3f}** nats per token over {d['benign_tokens']:,} tokens ({d['benign_examples']} responses), "
            f"harmful **{d['harmful']:.3f}** over {d['harmful_tokens']:,} ({d['harmful_examples']}); before position {k}: "
            f"benign {d['benign_before']:.3f}, harmful {d['harmful_before']:.3f}. The benign loss is "
            f"{ratio:.1f}x smaller than the harmful one past position {k}. The absolute benign score is a gradient of "
            "that loss times the weight; the closer the loss is to zero, the less its gradient says about what benign "
            "answers need, and the more weight magnitude may decide what is protected (our reading, not measured "
            "here). The p sweep below measures what the size of that protection does.")


def p_sweep_table(result: dict[str, Any]) -> pd.DataFrame | None:
    """The p sweep (first seed, one q): B-TAP's weights, harm cut and worst utility drop beside random
    of the same count, per p."""
    sweep = result.get("p_sweep")
    if not sweep:
        return None
    util = result["utility_metrics"]
    by = {(r["arm"], r["p"]): r for r in sweep["summary"]}
    out = []
    for pp in sorted({r["p"] for r in sweep["summary"]}):
        b, rnd = by.get(("btap", pp)), by.get(("random", pp))
        out.append({"p": f"{pp:g}", "x the run's p": f"{pp / sweep['p_fixed']:g}" if sweep["p_fixed"] else "-",
                    "weights": int(round(b["count"])) if b else None, "B-TAP harm cut": _cut(b) if b else "-",
                    "random harm cut": _cut(rnd) if rnd else "-",
                    "B-TAP worst utility drop (points)": _worst_drop(b, util) if b else "-"})
    return pd.DataFrame(out).set_index("p")


def p_sweep_markdown(result: dict[str, Any]) -> str:
    """What the p sweep is and what it found, in words computed from its rows."""
    sweep = result.get("p_sweep")
    if not sweep:
        return "**p sweep.** Not run (config `p_sweep=False`)."
    rows = [r for r in sweep["summary"] if r["arm"] == "btap"]
    util = result["utility_metrics"]
    meets = [r["p"] for r in rows if classify(r, util) == "meets"]
    found = (f"at p = {', '.join(f'{x:g}' for x in meets)} the criterion is met" if meets else
             "at no p is the criterion met (harm cut's interval above 80% and every utility drop's below 5 points)")
    return (f"**p sweep (labelled ablation; the paper fixes p).** At q = {sweep['q']:.3g} (unless set: the smallest "
            f"swept q at which B-TAP cut harm by at least half on the first seed), seed {sweep['seed']}, "
            f"p runs over {', '.join(f'{m:g}' for m in sweep['multiples'])} times the run's p = {sweep['p_fixed']:g} "
            "(0: no benign weight protected, plain top-q SNIP); random pruning of the same count in the same matrices "
            f"beside each. One seed, intervals over prompts only: {found}.")


def arms_markdown() -> str:
    """What each arm is, as a list (a table would cut the descriptions)."""
    return "\n".join(f"- `{arm}`: {what}" for arm, what in ARMS.items())


def headline_rows(result: dict[str, Any]) -> dict[str, str]:
    """The headline as a labelled table."""
    head = result["headline"]
    rows = {"criterion": head["criterion"], "harm judge": judge_label(result) if result.get("judge") else "organism (exact)",
            "unpruned harmfulness (prefilling)": f"{head['baseline_harm_prefill']:.3f}"}
    if head["best_harm_reduction"] is not None:
        lo, hi = head["best_harm_reduction_ci"]
        rows["best harm reduction over the sweep"] = f"{head['best_harm_reduction']:.0%} {_ci(lo, hi, True)} at {head['best_count']:,} weights"
    rows["per q (B-TAP)"] = ", ".join(f"{q}: {c}" for q, c in head["classes"].items())
    if head["smallest_fraction"] is not None:
        rows.update({"smallest fraction meeting it": f"{head['smallest_fraction']:.4%}",
                     "weights zeroed": f"{head['smallest_count']:,}", "q": f"{head['q']:g}",
                     "size: multiple of the paper's 0.001%": f"{format_multiple(paper_multiple(head['smallest_fraction']))} "
                                                             f"(bound {SIZE_BOUND}x)",
                     "random pruning of the same count, harmfulness": f"{head['random_harm_at_same_count']:.3f}"
                     + (f" ({head['random_class']})" if head.get("random_class") else "")})
        if head.get("control_harm_at_same_count") is not None:
            rows["control-task selection of the same count, harmfulness"] = (
                f"{head['control_harm_at_same_count']:.3f} ({head.get('control_class')})")
    else:
        rows["smallest fraction meeting it"] = "none in the sweep"
        if head.get("best_paper_multiple") is not None:
            rows["size of the best cut: multiple of the paper's 0.001%"] = (
                f"{format_multiple(head['best_paper_multiple'])} (bound {SIZE_BOUND}x)")
    rows["paper"] = (f"0.0005-0.001% of parameters on 7-32B models (revised text, section 3.1); p = {PAPER['p']:g}, "
                     f"q = {PAPER['q']:g} for {PAPER['model']} in the authors' code")
    masks = result.get("masks") or {}
    if masks:
        rows["masks saved"] = ", ".join(f"`{m['path']}`" for m in masks.values())
    return rows


def reading(result: dict[str, Any]) -> str:
    """The result in words (markdown)."""
    from .compactness import verdict
    head = result["headline"]
    measured, word = verdict(result)
    lines = [f"**Verdict on `{result['model']}`: {word}.** {measured[0].upper() + measured[1:]}."]
    if head.get("smallest_fraction") is None and not head.get("note"):
        und = head.get("undecided_qs") or []
        lines.append("No swept fraction had its harm-cut interval above "
                     f"{HARM_CUT:.0%} together with every utility drop's interval below {UTILITY_DROP * 100:.0f} points"
                     + (f"; at q = {', '.join(f'{q:g}' for q in und)} an interval straddles a threshold, so the data "
                        "cannot tell (more prompts or seeds would)." if und else "."))
    elif head.get("smallest_fraction") is not None:
        lines.append("Random pruning of the same count " + ("did not meet it" if head["targeted_vs_random"] else "**met it too**")
                     + f" (harmfulness {head['random_harm_at_same_count']:.3f})"
                     + ("" if head.get("targeted_vs_control") is None else
                        "; the control-task selection " + ("did not" if head["targeted_vs_control"] else "**did too**")
                        + f" (harmfulness {head['control_harm_at_same_count']:.3f})") + ".")
    note = size_note(result)
    if note and not head.get("note"):
        lines.append(f"Size: {note[0].upper() + note[1:]}; the rule reads a cut beyond the bound as partly "
                     "reproduced at most.")
    util = result["utility_metrics"]
    btap = sorted((r for r in result["summary"] if r["arm"] == "btap"), key=lambda r: r["fraction"])
    first = []
    for u in util:
        fell = [r for r in btap if r.get(f"drop:{u}_lo", -1) > UTILITY_DROP]
        if fell:
            first.append((fell[0]["fraction"], u.removeprefix("utility:")))
    if first:
        lines.append(f"Utility measures whose drop's interval lies above {UTILITY_DROP * 100:.0f} points somewhere in the "
                     "sweep, by the fraction where that first happens: "
                     + ", ".join(f"{u} ({f:.3%})" for f, u in sorted(first)) + ".")
    else:
        lines.append(f"No utility measure's drop was above {UTILITY_DROP * 100:.0f} points with confidence anywhere in the sweep.")
    by = {a: sorted((r for r in result["summary"] if r["arm"] == a), key=lambda r: r["fraction"]) for a in ("btap", "random", "control")}
    if all(by.values()):
        lines.append(f"At the largest q, B-TAP left harmfulness at {by['btap'][-1]['harm_prefill']:.3f}; the control-task "
                     f"selection of the same count left it at {by['control'][-1]['harm_prefill']:.3f} and random weights at "
                     f"{by['random'][-1]['harm_prefill']:.3f}.")
    if result["scale"] == "smoke":
        lines.append("*This is a smoke-scale run (" + ("tiny model, " if not is_real(result) else "")
                     + "few prompts): its numbers test the pipeline, not the claim.*")
    return "\n\n".join(lines)


def differences(result: dict[str, Any]) -> str:
    """Which settings differ from the paper, for this model (markdown)."""
    total, cand = result["total_parameters"], result.get("paper_q_candidates")
    qtext = (f"the q range (the paper's q = {PAPER['q']:g} gives {cand:,} candidate weights in all on this model, "
             "because `int(q * N)` rounds down per matrix)" if cand is not None else "the q range")
    gen = f"greedy decoding with a {result['generation']['max_new_tokens']}-token generation budget"
    if not is_real(result):
        return (f"Which settings differ from the paper: the model (a {total:,}-parameter organism instead of 7-32B), "
                f"the judge (the organism's exact judge instead of the StrongREJECT classifier), {gen}, and {qtext}. "
                "The scoring format, the per-matrix selection and the loss window are the paper's in the `btap` arm; "
                "the ablation arms change exactly one of them each.")
    d = result["data"]
    judge = ("the judge-free `reference_nll` instead of the StrongREJECT classifier, which needs the gated hub"
             if result["judge"] == "reference_nll" else f"`{result['judge']}`")
    return (f"Which settings differ from the paper: the model (`{result['model']}`, {total:,} parameters, instead of "
            f"7-32B), the judge ({judge}), the data (Do-Not-Answer and HarmBench prompts answered by "
            f"`{d['reference_model']}` instead of AdvBench `align_anti`; the project's benign instructions instead of "
            "Alpaca-no-safety; the project's trivia set instead of TriviaQA as control task and QA utility), the "
            "utility measures (exp(-NLL) of held-out benign answers, trivia QA and over-refusal instead of the zero-shot "
            f"suite), {d['calibration_per_seed']['harmful']} calibration examples per side instead of 412, {gen}, and "
            f"{qtext}. The scoring format, the per-matrix selection and the loss window are the paper's in the `btap` "
            "arm; the ablation arms change exactly one of them each.")


# ----------------------------------------------------------------------------------------------
# the third attack: fine-tuning (finetune_attack.py)
# ----------------------------------------------------------------------------------------------
ATTACK_MEASURES = {"harm_none": "harm, no attack", "refusal": "refusal rate", "harm_prefill": "harm, prefilling"}
ATTACK_STATES = {"untouched": "unpruned", "pruned_before": "B-TAP-pruned, before",
                 "unpruned_after": "unpruned + harmful fine-tune", "btap_after": "B-TAP-pruned + harmful fine-tune",
                 "btap_minus_unpruned_after": "B-TAP - unpruned, after"}


def attack_table(result: dict[str, Any]) -> pd.DataFrame | None:
    """One row per model state, one column per measure (95% intervals over prompts and seeds)."""
    att = result.get("finetune_attack")
    if not att:
        return None
    s = att["summary"]
    return pd.DataFrame([{"state": label, **{m: interval_text(s[m][key], signed=key == "btap_minus_unpruned_after")
                                             for m in ATTACK_MEASURES}}
                         for key, label in ATTACK_STATES.items()]).rename(columns=ATTACK_MEASURES)


def attack_markdown(result: dict[str, Any]) -> str:
    """The fine-tuning attack's set-up and reading, or why it did not run."""
    att = result.get("finetune_attack")
    if not att:
        why = ("off by default for real models (six full fine-tunes of the model do not fit 2 CPU cores)"
               if is_real(result) else "switched off")
        return f"The fine-tuning attack was not run: {why}; `-p finetune_attack=True` runs it."
    ft, mv, s, pf = att["finetune"], att["movement"], att["summary"]["harm_none"], att["summary"]["harm_prefill"]
    regrow = sum(m["regrowth"] for m in mv) / len(mv) if mv else float("nan")
    restored = att["restored_share"]
    reading = (f"the pruned model regains {restored:.0%} of the unpruned fine-tuned model's harmfulness"
               if restored == restored else "the unpruned fine-tune produced no harm to compare with")
    return (f"**Set-up.** B-TAP as in the sweep, p = {att['p']:g}, q = {att['q']:.3g} ({att['count']:,} weights, "
            f"{att['fraction']:.3%} of parameters): {att['budget_rule']}. Then a {ft['kind']} fine-tune on "
            f"{ft['n_train']} harmful training answers (chat format; {ft['steps']} steps, lr {ft['lr']:g}, batch "
            f"{ft['batch_size']}; seeds {ft['seeds']}), and the unpruned model fine-tuned the same way. The fine-tune "
            "is the attack: harmfulness is read with no prefilling, and with it.\n\n"
            f"**Reading.** After the harmful fine-tune, harmfulness with no attack is {interval_text(s['btap_after'])} for the "
            f"pruned model and {interval_text(s['unpruned_after'])} for the unpruned one: {reading}. Under prefilling, the pruned "
            f"model's harmfulness goes from {interval_text(pf['pruned_before'])} before the fine-tune to {interval_text(pf['btap_after'])} "
            f"after it (unpruned model: {interval_text(pf['untouched'])}). The paper reports that harm mostly returns. The full fine-tune regrew the zeroed weights to {regrow:.1%} of their magnitude "
            "before pruning, on average.")
