"""Learning curves from ``fairseq-train --log-format simple`` logs: valid NLL and BLEU against updates and seconds.

A point's seconds are the wall time since the run's first log line, from the timestamps fairseq
prints; when the study resumed a run (a ``# DATE COMMAND`` header line starts each call), the pause
between calls is not counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

_VALID = re.compile(r"\| valid on 'valid' subset \|(.*)$")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|")
_FIELD = re.compile(r"\|?\s*(\w+) ([-+0-9.eE]+|inf|nan)\s*(?=\||$)")


@dataclass(frozen=True)
class CurvePoint:
    updates: int
    nll_bits: float  # fairseq's nll_loss: base 2, per target token, on the references
    bleu: Optional[float]  # --eval-bleu (greedy) on the valid split
    seconds: Optional[float] = None  # wall time of the run at this validation


def valid_points(log: str) -> List[CurvePoint]:
    """Every validation of a log, in order (a resumed log may repeat an update count: the last wins)."""
    points: Dict[int, CurvePoint] = {}
    before, start, last = 0.0, None, None  # seconds of earlier calls; first and last stamp of this call
    for line in log.splitlines():
        if line.startswith("# ") and start is not None:
            before, start = before + (last - start).total_seconds(), None
            continue
        stamp = _STAMP.match(line)
        if stamp is not None:
            last = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
            start = start or last
        m = _VALID.search(line)
        if m is None:
            continue
        values = {k: float(v) for k, v in _FIELD.findall(m.group(1))}
        if "num_updates" in values and "nll_loss" in values:
            seconds = before + (last - start).total_seconds() if stamp is not None else None
            points[int(values["num_updates"])] = CurvePoint(int(values["num_updates"]), values["nll_loss"],
                                                            values.get("bleu"), seconds)
    return [points[k] for k in sorted(points)]


def plot_curves(curves: Dict[str, List[CurvePoint]], path: Path, title: str = "") -> bool:
    """Valid NLL and BLEU against updates, and BLEU against seconds, one line per run; False without matplotlib."""
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
