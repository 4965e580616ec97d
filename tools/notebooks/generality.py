"""Spec of notebooks/02_generality.ipynb (run: python tools/notebooks/generality.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_notebook import write  # noqa: E402

CELLS = [
    ("md", """
# Finding 2: cross-category generality

**The paper's claim.** Weights found on one harm category (e.g. malware) also remove harmful generation in other
categories (e.g. hate speech): the categories' harm-generation weight sets heavily overlap.

**What this notebook does.** For each calibration seed it scores every harm category's calibration set and the
benign set, fixes one budget (the per-matrix counts of B-TAP on all categories pooled, at the q whose in-category
cut is closest to 50%), and prunes at exactly that budget with: each category's weights (the transfer matrix), all
categories but one (leave-one-out), random weights, the control task's weights, and the intersection of all
categories' sets. Harmfulness is measured under the prefilling attack on every category's held-out prompts,
utility on every benign family, for every prune set.
"""),
    ("code", """
import os
model = "organism-aligned"
scale = os.environ.get("HARMPRUNE_SCALE", "full")
device = "auto"        # "auto" (CUDA when present, bf16 for hub models; else CPU), "cpu", "cuda", "cuda:N"
config = {}            # any other field of the experiment config (every size); the CLI -p routes such fields here
p = None               # benign top fraction kept safe (None: the preset's)
q = None               # the budget (None: chosen by the rule above)
seeds = None           # calibration seeds (None: [0, 1, 2] at full scale)
n_per_category = None  # harmful calibration examples per category (None: the scale's)
n_eval = None          # held-out harmful prompts per category (None: the scale's)
judge = "auto"         # real models: "auto", "reference_nll", "strongreject"
"""),
    ("code", """
from IPython.display import Markdown, display

from replication.experiments import generality, generality_render as view
from replication.tables import markdown_table

cfg = generality.GeneralityConfig.for_scale(model, scale, device=device, p=p, q=q, seeds=seeds, n_per_category=n_per_category,
                                            n_eval=n_eval, judge=judge, **config)
result = generality.run(cfg, progress=False)
print(f"{model}, scale={scale}: p = {result['p']:g}, q = {result['q']:g}, {result['count']:,} weights per prune set")
print(f"run took {result['seconds']:.0f} s ({result['evaluations']['evaluated']} states evaluated)")
display(Markdown(view.setup_markdown(result)))
"""),
    ("md", """
## The result
"""),
    ("code", """
display(Markdown(view.reading(result)))
"""),
    ("md", """
## Transfer and overlap

Top: the relative drop in harmfulness on the held-out prompts of each category (columns) when the weights found
on one category (rows) are pruned; the diagonal is in-category pruning. Bottom: how much the pruned sets overlap
(Jaccard index), with the overlap two random sets of the same per-matrix sizes would have in the title. The same
numbers with their intervals are folded below the figure.
"""),
    ("code", """
fig = view.heatmaps(result)
"""),
    ("code", """
display(Markdown("**Transfer matrix** (harm cut with its 95% interval; rows: pruned with, columns: measured on)"))
display(Markdown(markdown_table(view.transfer_table(result))))
display(Markdown("**Overlap of the pruned sets**"))
display(Markdown(markdown_table(view.overlap_table(result), index=False)))
""", ["hide-output"]),
    ("md", """
## Leave-one-out: the paper's claim, one row per category

Prune with every category except B and measure B; beside it, pruning with B itself and random weights of the same
count. A category passes when the interval of (leave-one-out cut / in-category cut) lies above 50% and both cuts'
intervals lie above random pruning's.
"""),
    ("code", """
fig = view.loo_figure(result)
display(Markdown(markdown_table(view.loo_table(result))))
"""),
    ("md", """
## Utility of every prune set

The drop of utility in points (positive: worse) with its interval, so that a harm cut is never read off a broken
model: below, the worst measure per prune set; folded after it, every measure. The intersection row prunes only
the weights every category's set shares.
"""),
    ("code", """
display(Markdown(markdown_table(view.utility_summary(result))))
"""),
    ("code", """
display(Markdown("**Every utility measure's drop, every prune set** (points, 95% intervals)"))
display(Markdown(markdown_table(view.utility_table(result))))
""", ["hide-output"]),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[2] / "notebooks" / "02_generality.ipynb", CELLS)
