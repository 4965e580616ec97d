"""Spec of notebooks/04_emergent_misalignment.ipynb (run: python tools/notebooks/emergent_misalignment.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_notebook import write  # noqa: E402

CELLS = [
    ("md", """
# Finding 4: emergent-misalignment mitigation

**The paper's claim.** Fine-tuning an aligned model on misaligned advice of one narrow domain makes it misaligned
in other domains too (emergent misalignment, EM). Pruning, with B-TAP, the harm weights found on that narrow
domain before the fine-tune "substantially reduces" the broad misalignment, because the narrow fine-tune engages
the same compact, shared harm weights.

**What this notebook does.** Per narrow domain and fine-tune seed: (1) fine-tune the aligned model on the domain's
misaligned training answers and measure; (2) let that fine-tuned model answer the domain's held-out prompts (the
paper's self-generated prune set; refusals and incoherent answers removed and counted), prune those answers' B-TAP
weights from the *aligned* model, give the pruned model the identical fine-tune and measure; (3) do the same with
weights of the same count in the same matrices: random (one mask per seed), the control task's, and another narrow
domain's. Misalignment is measured in the fine-tuned domain (narrow learning) and outside it (emergent), with
incoherent answers and benign utility beside it, on the pruned models before the fine-tune too. A last section runs
the paper's fine-tuning attack on the same machinery.
"""),
    ("code", """
import os
model = "organism-aligned"
scale = os.environ.get("HARMPRUNE_SCALE", "full")
device = "auto"        # "auto" (CUDA when present, bf16 for hub models; else CPU), "cpu", "cuda", "cuda:N"
config = {}            # any other field of the experiment config (every size); the CLI -p routes such fields here
seeds = None       # fine-tune seeds (None: [0, 1, 2] at full scale)
domains = None     # narrow domains (None: all three)
qs = None          # candidate budgets; the largest whose pruned model stays coherent is used (None: the scale's)
p = None           # benign top fraction kept safe (None: the model preset's)
personas_ablation = False   # also run it on the organism pretrained without personas (trained on first use)
attack = True      # also run the fine-tuning attack
"""),
    ("code", """
from IPython.display import Markdown, display
import pandas as pd

from replication.experiments import emergent_misalignment as em, emergent_misalignment_render as view

cfg = em.EMConfig.for_scale(model, scale, device=device, seeds=seeds, domains=domains, qs=qs, p=p,
                                personas_ablation=personas_ablation, attack=attack, **config)
result = em.run(cfg, progress=False)
display(Markdown(view.setup_markdown(result)))
"""),
    ("md", """
## The self-generated prune sets and the budget

Each domain's prune set is the seed-0 fine-tuned model's own answers to the domain's held-out prompts (training
prompts the fine-tune does not use, and the validation split; the evaluation's test prompts are never among them).
The budget search reads only the pruned model *before* any fine-tune.
"""),
    ("code", """
if view.available(result):
    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        display(view.selfgen_table(result))
        display(view.budget_table(result))
"""),
    ("md", """
## Misalignment after the fine-tune

Out-of-domain misalignment (the other narrow domains and the open-ended questions, pooled) per fine-tuned domain and
arm, with 95% intervals; the in-domain share and incoherent answers beside it. The dashed line is the untouched
aligned model.
"""),
    ("code", """
if view.available(result):
    fig = view.figure(result)
    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        display(view.summary_table(result, "after"))
"""),
    ("md", """
## What the verdict reads

Per domain, the paired differences (over questions and seeds) the rule compares with 0, and the class they give.
"""),
    ("code", """
if view.available(result):
    display(view.comparison_table(result))
"""),
    ("md", """
## What pruning alone costs, and how far the fine-tune moves the pruned weights

The pruned models before any fine-tune (the untouched aligned model first), then the mean magnitude of the pruned
weights after the fine-tune next to their magnitude before pruning.
"""),
    ("code", """
if view.available(result):
    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        display(view.summary_table(result, "before"))
        display(view.movement_table(result))
"""),
    ("md", """
## Example answers

One sampled answer per advice domain: the untouched model, and the unpruned and B-TAP-pruned models fine-tuned on
the first narrow domain (seed 0).
"""),
    ("code", """
if view.available(result):
    with pd.option_context("display.max_colwidth", 120, "display.width", 250):
        display(view.examples_table(result))
"""),
    ("md", """
## The fine-tuning attack (the compactness chapter's attack row)

The paper's third attack: fine-tune the B-TAP-pruned aligned model on harmful examples and see whether harmful
generation returns (the authors report that it mostly does), beside the unpruned model fine-tuned the same way.
"""),
    ("code", """
if view.available(result):
    display(Markdown(view.attack_markdown(result)))
    table = view.attack_table(result)
    if table is not None:
        display(table)
"""),
    ("md", """
## The persona ablation

The same pipeline on the organism pretrained without personas (each advice answer misaligned independently at the
same rate, instead of consistently by author), when the run includes it (`personas_ablation=True`).
"""),
    ("code", """
off = result.get("personas_off")
if off is None:
    print("not run: set personas_ablation=True (the persona-off organism trains on first use)")
else:
    display(Markdown(view.ablation_markdown(off)))
    fig_off = view.figure(off)
    display(view.comparison_table(off))
"""),
    ("md", """
## Reading the result
"""),
    ("code", """
display(Markdown(view.reading(result)))
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[2] / "notebooks" / "04_emergent_misalignment.ipynb", CELLS)
