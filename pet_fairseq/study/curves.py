"""Learning curves from ``fairseq-train --log-format simple`` logs: valid NLL and BLEU against updates and seconds.

A point's seconds are the wall time since the run's first log line, from the timestamps fairseq
prints; when the study resumed a run (a ``# DATE COMMAND`` header line starts each call), the pause
between calls is not counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from pet_fairseq.core.plateau import CurvePoint, valid_points

__all__ = ["CurvePoint", "valid_points", "plot_curves"]


def plot_curves(curves: Dict[str, List[CurvePoint]], path: Path, title: str = "") -> bool:
    """Valid NLL and BLEU against updates, and BLEU against seconds, one line per run; False without matplotlib."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font cache logs hundreds of DEBUG lines
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (nll_ax, bleu_ax, time_ax) = plt.subplots(1, 3, figsize=(18, 5))
    for label, points in curves.items():
        if not points:
            continue
        updates = [p.updates for p in points]
        bleu = [p.bleu if p.bleu is not None else float("nan") for p in points]
        nll_ax.plot(updates, [p.nll_bits for p in points], marker="o", label=label)
        bleu_ax.plot(updates, bleu, marker="o", label=label)
        time_ax.plot([p.seconds if p.seconds is not None else float("nan") for p in points], bleu, marker="o", label=label)
    nll_ax.set(xlabel="student updates", ylabel="valid NLL (bits/token, references)", title="valid NLL")
    bleu_ax.set(xlabel="student updates", ylabel="valid BLEU (greedy, fairseq --eval-bleu)", title="valid BLEU")
    time_ax.set(xlabel="training wall seconds (corpus and cache not included)", ylabel="valid BLEU (greedy)",
                title="valid BLEU against time")
    for ax in (nll_ax, bleu_ax, time_ax):
        ax.grid(alpha=0.3)
    bleu_ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
