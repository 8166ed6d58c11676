"""Training step time from fairseq-train logs: total ``train_wall`` over the updates run.

:func:`training_cost` reads the end-of-epoch lines (``| train | epoch NNN | ... num_updates N | ...
train_wall S``) of ``--log-format simple`` or ``json`` logs. The study's table
(:mod:`pet_fairseq.study.table`) and ``pet-training-cost`` (:mod:`pet_fairseq.evaluation.training_cost`)
report it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_SIMPLE = re.compile(r"\| train \| epoch \d+ \|.*?\bnum_updates (\d+)\b.*?\btrain_wall (\d+(?:\.\d+)?)")
_JSON = re.compile(r"\| train \| (\{.*\})\s*$")


@dataclass(frozen=True)
class TrainingCost:
    updates: int
    train_seconds: float

    @property
    def seconds_per_update(self) -> float:
        return self.train_seconds / self.updates


def training_cost(log: str) -> TrainingCost:
    """Total ``train_wall`` over all epochs and the final ``num_updates`` of one fairseq-train log."""
    epochs = []
    for line in log.splitlines():
        if (m := _SIMPLE.search(line)) is not None:
            epochs.append((int(m.group(1)), float(m.group(2))))
        elif (j := _JSON.search(line)) is not None:
            stats = json.loads(j.group(1))
            epochs.append((int(stats["train_num_updates"]), float(stats["train_train_wall"])))
    if not epochs or epochs[-1][0] == 0:
        raise ValueError("no end-of-epoch '| train |' line with num_updates/train_wall in this log")
    return TrainingCost(epochs[-1][0], sum(wall for _, wall in epochs))
