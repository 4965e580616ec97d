"""Spec of notebooks/05_dissociation.ipynb (run: python tools/notebooks/dissociation.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_notebook import write  # noqa: E402

CELLS = [
    ("md", """
# Finding 5: generation / recognition dissociation

**The paper's claim.** Models pruned of their harm-generation weights can still recognise harmful requests, refuse
them and explain their risks; generating harm and refusing are doubly dissociated (impairing one leaves the other
intact).

**What this notebook does.** Four capabilities (generation, refusal, detection, explanation) each get their own
prune data and the same p and q; each mask is applied and every capability is measured on held-out prompts, with
utility and a random mask of generation's count beside them, at two budgets.
"""),
    ("code", """
import os
model = "organism-aligned"
scale = os.environ.get("HARMPRUNE_SCALE", "full")
device = "auto"        # "auto" (CUDA when present, bf16 for hub models; else CPU), "cpu", "cuda", "cuda:N"
config = {}            # any other field of the experiment config (every size); the CLI -p routes such fields here
p = None               # benign top fraction kept safe (None: the preset's)
qs = None              # swept budgets (None: compactness's q range)
seeds = None           # calibration seeds (None: [0, 1, 2] at full scale)
n_calibration = None   # prune examples per capability (None: the scale's)
judge = "auto"         # real models
"""),
    ("code", """
from IPython.display import Markdown, display

from replication.experiments import dissociation, dissociation_render as view
from replication.tables import markdown_table

cfg = dissociation.DissociationConfig.for_scale(model, scale, device=device, p=p, qs=qs, seeds=seeds, n_calibration=n_calibration,
                                                judge=judge, **config)
result = dissociation.run(cfg, progress=False)
print(f"{model}, scale={scale}: budgets {result['budgets']}")
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
## The capability matrix

Rows: whose weights are pruned; columns: the change of each measure from the unpruned model, in points (negative:
lower). Generation is read as harmfulness under the prefilling attack, willingness to comply as harmfulness with
no attack.
"""),
    ("code", """
fig = view.heatmap(result)
display(Markdown(markdown_table(view.matrix_summary(result), index=False)))
"""),
    ("code", """
display(Markdown("**The full matrix, with every utility measure's drop** (points, 95% intervals)"))
display(Markdown(markdown_table(view.matrix_table(result), index=False)))
""", ["hide-output"]),
    ("md", """
## Overlap of the four sets
"""),
    ("code", """
display(Markdown(markdown_table(view.overlap_table(result), index=False)))
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[2] / "notebooks" / "05_dissociation.ipynb", CELLS)
