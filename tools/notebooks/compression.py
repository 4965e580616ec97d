"""Spec of notebooks/03_compression.ipynb (run: python tools/notebooks/compression.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_notebook import write  # noqa: E402

CELLS = [
    ("md", """
# Finding 3: alignment compression

**The paper's claim.** Aligned models concentrate harmful-response dependence onto a smaller and more separable set
of parameters than their unaligned counterparts ("mechanistic compression", in the revised text); along the OLMo-3
checkpoint sequence this separability emerges gradually, mostly after preference optimisation. The paper's exact
metric is not public.

**What this notebook does.** For one pair (the aligned model and its unaligned counterpart), with the same attack,
held-out prompts and judge, it computes five readings of "compression", each with a 95% interval over prompts and
calibration seeds: the harm cut at the same count of zeroed weights, the fewest weights for a 50% (and 80%) cut,
separability of the harmful from the benign top set, utility cost at a matched cut, and concentration of the
harmful score mass. On the organism it also computes the score-only readings along its training stages.
"""),
    ("code", """
import os
model = "organism-aligned"   # either member of the pair
counterpart = None           # None: the preset's counterpart
scale = os.environ.get("HARMPRUNE_SCALE", "full")
device = "auto"        # "auto" (CUDA when present, bf16 for hub models; else CPU), "cpu", "cuda", "cuda:N"
config = {}            # any other field of the experiment config (every size); the CLI -p routes such fields here
p = None                     # benign top fraction kept safe (None: the preset's)
q = None                     # reference q for readings 1, 3, 5 (None: the swept q nearest the preset's)
qs = None                    # the sweep (None: finding 1's q range)
seeds = None                 # calibration seeds (None: [0, 1, 2]; smoke: [0, 1])
series = True                # organism: readings 3 and 5 along the training stages
n_calibration = None         # calibration examples per side (None: finding 1's for the scale)
n_eval = None                # held-out harmful prompts per category (None: finding 1's)
judge = "auto"               # real models: "auto", "reference_nll", "strongreject"
"""),
    ("code", """
from IPython.display import Markdown, display
from replication.tables import markdown_table

from replication.experiments import compression, compression_render as view

cfg = compression.CompressionConfig.for_scale(model, scale, device=device, counterpart=counterpart, p=p, q=q, qs=qs, seeds=seeds,
                                              series=series, n_calibration=n_calibration, n_eval=n_eval, judge=judge, **config)
result = compression.run(cfg, progress=False)
print(f"{result['pair']['name']}, scale={scale}: run took {result['seconds']:.0f} s")
display(Markdown(view.setup_markdown(result)))
"""),
    ("md", """
## The five readings

Each reading compares the two members; "favours" names the member whose interval lies on the compressed side
(fewer weights, a larger cut, less overlap with the benign set, a smaller utility cost, more concentrated mass),
or *undecided* when the interval holds no difference.
"""),
    ("code", """
display(Markdown(markdown_table(view.readings_frame(result))))
display(Markdown(markdown_table(view.fewest_weights_frame(result), index=False)))
display(Markdown(view.verdict_markdown(result)))
"""),
    ("md", """
## Harm against budget, and where the harmful score mass sits
"""),
    ("code", """
fig = view.curves_figure(result)
"""),
    ("md", """
## Along the organism's training

The organism's own checkpoint sequence: the end of pretraining (raw documents only), the instruction-tuned base,
four points through its refusal alignment and the aligned model. Only the score-only readings (separability and
concentration) are computed here. The organism has no preference-optimisation stage, which the paper credits for
most of the compression; its alignment is supervised refusal training.
"""),
    ("code", """
if result["summary"]["series"]:
    fig = view.series_figure(result)
    display(Markdown(markdown_table(view.series_frame(result))))
else:
    print(result.get("series_skipped", "no stage series"))
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[2] / "notebooks" / "03_compression.ipynb", CELLS)
