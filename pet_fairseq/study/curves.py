"""Learning curves from ``fairseq-train --log-format simple`` logs: valid NLL and BLEU against updates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

_VALID = re.compile(r"\| valid on 'valid' subset \|(.*)$")
_FIELD = re.compile(r"\|?\s*(\w+) ([-+0-9.eE]+|inf|nan)\s*(?=\||$)")


@dataclass(frozen=True)
class CurvePoint:
    updates: int
    nll_bits: float  # fairseq's nll_loss: base 2, per target token, on the references
    bleu: Optional[float]  # --eval-bleu (greedy) on the valid split


def valid_points(log: str) -> List[CurvePoint]:
    """Every validation of a log, in order (a resumed log may repeat an update count: the last wins)."""
    points: Dict[int, CurvePoint] = {}
    for line in log.splitlines():
        m = _VALID.search(line)
        if m is None:
            continue
        values = {k: float(v) for k, v in _FIELD.findall(m.group(1))}
        if "num_updates" in values and "nll_loss" in values:
            points[int(values["num_updates"])] = CurvePoint(int(values["num_updates"]), values["nll_loss"], values.get("bleu"))
    return [points[k] for k in sorted(points)]


def plot_curves(curves: Dict[str, List[CurvePoint]], path: Path, title: str = "") -> bool:
    """Valid NLL and BLEU against updates, one line per run; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (nll_ax, bleu_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for label, points in curves.items():
        if not points:
            continue
        updates = [p.updates for p in points]
        nll_ax.plot(updates, [p.nll_bits for p in points], marker="o", label=label)
        bleu_ax.plot(updates, [p.bleu if p.bleu is not None else float("nan") for p in points], marker="o", label=label)
    nll_ax.set(xlabel="student updates", ylabel="valid NLL (bits/token, references)", title="valid NLL")
    bleu_ax.set(xlabel="student updates", ylabel="valid BLEU (greedy, fairseq --eval-bleu)", title="valid BLEU")
    for ax in (nll_ax, bleu_ax):
        ax.grid(alpha=0.3)
    bleu_ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
