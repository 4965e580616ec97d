"""Spec of notebooks/06_positive_control.ipynb (run: python tools/notebooks/positive_control.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_notebook import write  # noqa: E402

CELLS = [
    ("md", """
# Control: can the pipeline see a compact mechanism it was given?

**Why.** Finding 1 does not reproduce on our testbeds. That is only informative if the pipeline *could* have said
"reproduced". Here we plant a compact mechanism whose location is known: the aligned organism learns one new harm
category through a sparse fine-tune that may change only a random subset of its weights. Then finding 1's sweep,
unchanged, runs on that category. This is a check of the method, **not a result about any model**.
"""),
    ("code", """
import os
model = "organism-aligned"
scale = os.environ.get("HARMPRUNE_SCALE", "full")
device = "auto"        # "auto" (CUDA when present, bf16 for hub models; else CPU), "cpu", "cuda", "cuda:N"
config = {}            # any other field of the experiment config (every size); the CLI -p routes such fields here
fraction = None        # share of every decoder matrix that may change (None: the config's, 1%)
seeds = None           # calibration seeds (None: [0, 1, 2])
qs = None              # the sweep (None: 5 values around the planted fraction)
"""),
    ("code", """
from IPython.display import Markdown, display
from replication.tables import markdown_table

from replication.experiments import positive_control as pc, positive_control_render as view

cfg = pc.PositiveControlConfig.for_scale(model, scale, device=device, seeds=seeds, qs=qs, **config)
if fraction is not None:
    cfg.plant.fraction = fraction
result = pc.run(cfg, progress=False)
print(f"{model}, scale={scale}: run took {result['seconds']:.0f} s")
display(Markdown(view.planting_markdown(result)))
"""),
    ("md", """
## Before and after planting

The untouched aligned model never learned the planted category's content, so its harmfulness there is the floor;
the planted model should carry it, keep refusing the world's own categories and keep its utility. The last row
zeroes the planted set itself (what a perfect selection would prune).
"""),
    ("code", """
display(Markdown(markdown_table(view.states_frame(result))))
"""),
    ("md", """
## Finding 1's sweep on the planted category
"""),
    ("code", """
display(Markdown(markdown_table(view.sweep_frame(result), index=False)))
display(Markdown(view.verdict_markdown(result)))
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[2] / "notebooks" / "06_positive_control.ipynb", CELLS)
