"""One module per finding: the logic a notebook calls, so no result lives only in a notebook.

Importing any of them imports `safety_sft`, which registers the SmolLM2 safety counterpart's builder
with `models`: an experiment (or the notebook running it) can load that preset without knowing it is
built by a recipe.
"""
from .. import safety_sft  # noqa: F401  (registers the builder of "smollm2-135m-instruct-safety")
