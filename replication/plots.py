"""Figures the notebooks show. Each function takes plain numbers and returns a matplotlib Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt


def nll_profile_figure(profiles: Mapping[str, Sequence[float]], *, title: str = "Per-position NLL of held-out responses",
                       skip_line: int | None = 10):
    """Mean NLL at each response position, one line per (model, data) curve.

    A profile that is ~0 past the first tokens means the content is memorised: gradient scores
    would then rank only the comply-or-refuse decision (organism-notes.md).
    """
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, values in profiles.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
    if skip_line:
        ax.axvline(skip_line + 0.5, color="grey", ls=":", lw=1)
        ax.text(skip_line + 0.7, ax.get_ylim()[1] * 0.9, "prefill ends", color="grey", fontsize=8)
    ax.set_xlabel("response token position")
    ax.set_ylabel("mean NLL (nats)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
