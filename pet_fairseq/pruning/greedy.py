"""The search: which depth to remove next, greedily by a validation metric or simply from the top.

Greedy layer pruning (Peer et al., 2022): at every step, score the model with each remaining
candidate depth removed (in addition to those removed so far) and remove the one whose removal
hurts the metric least; stop when every side has reached its target depth. With targets on both
sides the search is *joint* by default: every remaining encoder and decoder depth competes at
each step (``order="joint"``); ``encoder-first``/``decoder-first`` prune one side to its target
before the other. ``strategy="top"`` is the baseline that always removes the topmost remaining
depth (with both sides, from the side that has the most depths left to remove; ties: encoder).

The search only needs ``score(removed)``: the metric of the model with the depths ``removed``
(a mapping side -> set of original depths, 0-based) skipped, so it is independent of fairseq.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from pet_fairseq.pruning.errors import PruningError
from pet_fairseq.pruning.surgery import SIDES

logger = logging.getLogger("pet_fairseq.pruning")

STRATEGIES = ("greedy", "top")
ORDERS = ("joint", "encoder-first", "decoder-first")

Removed = Mapping[str, Iterable[int]]
ScoreFn = Callable[[Removed], float]


@dataclass
class Candidate:
    """Removing original depth ``depth`` of ``side`` (0-based; the table shows it 1-based) and its score."""

    side: str
    depth: int
    score: float


@dataclass
class Step:
    """One removal: every candidate scored at this step, and the one removed."""

    step: int
    removed_side: str
    removed_depth: int  # 0-based depth of the original model
    score: float
    encoder_kept: list[int]  # original depths still present after this step
    decoder_kept: list[int]
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def encoder_layers(self) -> int:
        return len(self.encoder_kept)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder_kept)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Step":
        names = {f for f in cls.__dataclass_fields__}
        step = cls(**{k: v for k, v in d.items() if k in names})
        step.candidates = [Candidate(**c) for c in d.get("candidates", [])]
        return step


def check_targets(depths: Mapping[str, int], targets: Mapping[str, int | None]) -> dict[str, int]:
    """Targets per side (a side without one keeps its depth); a clear error for impossible targets."""
    if all(targets.get(side) is None for side in SIDES):
        raise PruningError("nothing to do: give --target-encoder-layers N and/or --target-decoder-layers M")
    resolved = {}
    for side in SIDES:
        target, depth = targets.get(side), depths[side]
        if target is None:
            resolved[side] = depth
        elif target < 1:
            raise PruningError(f"--target-{side}-layers {target}: a {side} needs at least 1 layer; pass 1..{depth}")
        elif target > depth:
            raise PruningError(
                f"--target-{side}-layers {target} asks for more layers than the model has: its {side} has "
                f"{depth}; pass a number from 1 to {depth}"
            )
        else:
            resolved[side] = target
    if all(resolved[side] == depths[side] for side in SIDES):
        raise PruningError(
            f"nothing to prune: the model already has {depths['encoder']} encoder and {depths['decoder']} "
            "decoder layers; pass smaller targets"
        )
    return resolved


def _sides_to_prune(kept: Mapping[str, list[int]], targets: Mapping[str, int], order: str) -> list[str]:
    open_sides = [side for side in SIDES if len(kept[side]) > targets[side]]
    if order == "joint" or len(open_sides) < 2:
        return open_sides
    return [open_sides[0] if order == "encoder-first" else open_sides[1]]


def _removed(depths: Mapping[str, int], kept: Mapping[str, list[int]]) -> dict[str, set[int]]:
    return {side: set(range(depths[side])) - set(kept[side]) for side in SIDES}


def format_table(step: Step, label: str, higher_is_better: bool) -> str:
    """The candidates of one step, best first; ``*`` marks the one removed."""
    sign = -1 if higher_is_better else 1
    lines = [f"step {step.step}: {len(step.candidates)} candidate(s) -> encoder {step.encoder_layers}, "
             f"decoder {step.decoder_layers} layers",
             f"   {'remove':<16} {label:>24}"]
    for c in sorted(step.candidates, key=lambda c: (sign * c.score, c.side, -c.depth)):
        mark = "*" if (c.side, c.depth) == (step.removed_side, step.removed_depth) else " "
        lines.append(f" {mark} {c.side + ' layer ' + str(c.depth + 1):<16} {c.score:>24.4f}")
    return "\n".join(lines)


def search(
    score: ScoreFn,
    depths: Mapping[str, int],
    targets: Mapping[str, int],
    strategy: str = "greedy",
    order: str = "joint",
    higher_is_better: bool = False,
    done: Sequence[Step] = (),
    on_step: Callable[[Step], None] | None = None,
    label: str = "score",
) -> list[Step]:
    """Remove depths until each side has ``targets[side]`` layers; return every step (``done`` + new ones).

    ``done`` are steps of an interrupted run, replayed without scoring. ``on_step`` is called
    after each new step (to write partial results). Ties go to the higher depth.
    """
    if strategy not in STRATEGIES:
        raise PruningError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if order not in ORDERS:
        raise PruningError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    kept = {side: list(range(depths[side])) for side in SIDES}
    steps = list(done)
    for step in steps:
        kept[step.removed_side].remove(step.removed_depth)
    sign = 1 if higher_is_better else -1
    total = sum(depths[side] - targets[side] for side in SIDES)
    with tqdm(total=total, initial=len(steps), desc=f"{strategy} pruning", unit="layer", mininterval=1.0) as bar:
        while sides := _sides_to_prune(kept, targets, order):
            start = time.perf_counter()
            if strategy == "greedy":
                options = [(side, d) for side in sides for d in kept[side]]
            else:
                side = max(sides, key=lambda s: (len(kept[s]) - targets[s], s == "encoder"))
                options = [(side, kept[side][-1])]
            candidates = []
            for side, d in tqdm(options, desc=f"step {len(steps) + 1} candidates", unit="cand", leave=False,
                                mininterval=1.0, disable=len(options) < 2):
                removed = _removed(depths, kept)
                removed[side].add(d)
                candidates.append(Candidate(side, d, float(score(removed))))
            best = max(candidates, key=lambda c: (sign * c.score, c.depth))
            kept[best.side].remove(best.depth)
            step = Step(len(steps) + 1, best.side, best.depth, best.score, list(kept["encoder"]),
                        list(kept["decoder"]), candidates, round(time.perf_counter() - start, 3))
            steps.append(step)
            logger.info("%s\n%s", f"[{strategy}]", format_table(step, label, higher_is_better))
            if on_step is not None:
                on_step(step)
            bar.update(1)
    return steps
