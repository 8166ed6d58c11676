"""Layer plans: which unique layer runs at each depth of a stack, and how.

A plan is written as comma-separated steps, one per depth::

    0,1,0~,1~     PET / Pea-KD shuffled sharing: 2 unique layers run as 4; ``~`` marks the
                  second pass, whose self-attention swaps its query and key projections
    0,0,0,0       ALBERT-style: one layer applied at every depth
    0,1,2,3       no sharing (a plain Transformer stack)

Sharing is data, not code paths: every scheme is a plan read by the same encoder/decoder.
For a step ``i~`` the self-attention of unique layer ``i`` computes

    Attention(Q, K, V) = softmax((x W_K)(x W_Q)^T / sqrt(d_k)) (x W_V),

i.e. ``W_Q`` and ``W_K`` trade places, so the reused layer attends differently at no
parameter cost (Jeon et al., PET, PLoS One 2023; Cho & Kang, Pea-KD, 2020).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pet_fairseq.core.errors import ConfigError

_STEP = re.compile(r"^(\d+)(~?)$")


@dataclass(frozen=True)
class LayerStep:
    """One depth of a stack: apply unique layer ``index``, with Q/K swapped if ``swap_qk``."""

    index: int
    swap_qk: bool = False

    def __str__(self) -> str:
        return f"{self.index}{'~' if self.swap_qk else ''}"


@dataclass(frozen=True)
class LayerPlan:
    """The sequence of :class:`LayerStep` applied from the bottom of a stack to its top."""

    steps: tuple[LayerStep, ...]

    @classmethod
    def parse(cls, text: str, option: str = "layer plan") -> "LayerPlan":
        """Parse ``"0,1,0~,1~"``; ``option`` names the command-line flag in error messages."""
        tokens = [t.strip() for t in str(text).split(",")]
        if not text or not str(text).strip() or any(not t for t in tokens):
            raise ConfigError(f"{option} {text!r} is empty or has an empty step; write e.g. '0,1,0~,1~'")
        steps = []
        for token in tokens:
            match = _STEP.match(token)
            if match is None:
                raise ConfigError(
                    f"{option} {text!r}: unknown step {token!r}; a step is a unique-layer index, "
                    "optionally followed by '~' (second pass with query and key swapped), e.g. '0,1,0~,1~'"
                )
            steps.append(LayerStep(int(match.group(1)), bool(match.group(2))))
        plan = cls(tuple(steps))
        missing = sorted(set(range(plan.num_unique)) - {s.index for s in steps})
        if missing:
            raise ConfigError(
                f"{option} {text!r} never applies unique layer(s) {missing}: indices must be "
                f"0..{plan.num_unique - 1} with none skipped (renumber the plan)"
            )
        return plan

    @classmethod
    def unshared(cls, depth: int) -> "LayerPlan":
        """``0,1,...,depth-1``: every depth has its own layer (a plain Transformer)."""
        return cls(tuple(LayerStep(i) for i in range(depth)))

    @classmethod
    def stacked(cls, num_unique: int, passes: int = 2, swap_qk: bool = True) -> "LayerPlan":
        """PET's stacked reuse: ``0..n-1`` then ``0~..n-1~`` (``passes`` times in all)."""
        return cls(tuple(LayerStep(i, swap_qk and p > 0) for p in range(passes) for i in range(num_unique)))

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def num_unique(self) -> int:
        return max(s.index for s in self.steps) + 1

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)
