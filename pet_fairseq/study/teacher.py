"""The teacher a recipe or a study distils from, checked once before any of their jobs runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from pet_fairseq.core.errors import ConfigError


def check_teacher(path: Path, pair: Optional[Tuple[str, str]]) -> None:
    """Refuse a ``--teacher`` that is not a fairseq checkpoint, or that translates another direction than ``pair``,
    before any stage or job runs (each job's tool would refuse it too, but only after the jobs before it)."""
    from pet_fairseq.core.checkpoint import read_teacher_checkpoint
    from pet_fairseq.tasks.distillation import teacher_direction

    state = read_teacher_checkpoint(str(path))
    direction, _ = teacher_direction(state["cfg"].get("task") or {})
    if pair and direction and tuple(direction) != tuple(pair):
        raise ConfigError(f"--teacher {path} translates {direction[0]}->{direction[1]}, but this run trains "
                          f"{pair[0]}->{pair[1]}: pass a teacher trained for {pair[0]}->{pair[1]}, or a data-bin and "
                          f"--source-lang {direction[0]} --target-lang {direction[1]} of the teacher's direction")
