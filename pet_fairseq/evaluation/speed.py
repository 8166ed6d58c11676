"""Decode-speed measurement: warm-up, then the median of N timed passes."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

#: A decoding pass returns (sentences decoded, target tokens generated).
DecodeFn = Callable[[], tuple[int, int]]


@dataclass
class SpeedResult:
    """Timed passes of one model. Rates use the median pass time."""

    seconds: list[float]
    sentences: int
    tokens: int
    warmup_calls: int
    median_seconds: float = field(init=False)
    sentences_per_second: float = field(init=False)
    tokens_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        self.median_seconds = statistics.median(self.seconds)
        self.sentences_per_second = self.sentences / self.median_seconds if self.median_seconds > 0 else float("inf")
        self.tokens_per_second = self.tokens / self.median_seconds if self.median_seconds > 0 else float("inf")

    @classmethod
    def from_dict(cls, figures: dict) -> "SpeedResult":
        """Rebuild a result from :meth:`to_dict` output (the derived rates are recomputed)."""
        return cls(
            seconds=list(figures["seconds"]),
            sentences=int(figures["sentences"]),
            tokens=int(figures["tokens"]),
            warmup_calls=int(figures["warmup_calls"]),
        )

    def to_dict(self) -> dict:
        """Every figure, for the JSON report."""
        return asdict(self)


def measure_speed(
    decode_fn: DecodeFn,
    n_repeats: int,
    n_warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    warmup_fn: Callable[[], object] | None = None,
) -> SpeedResult:
    """Call ``warmup_fn`` (default ``decode_fn``) ``n_warmup`` times untimed, then time ``n_repeats``
    calls of ``decode_fn`` with ``clock``.

    Every timed pass must decode the same number of sentences and tokens (beam search is
    deterministic); a pass that differs raises ``RuntimeError`` rather than averaging over
    different work.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    warmup = warmup_fn or decode_fn
    for _ in range(n_warmup):
        warmup()
    seconds, counts = [], set()
    for _ in range(n_repeats):
        start = clock()
        counts.add(tuple(decode_fn()))
        seconds.append(clock() - start)
    if len(counts) != 1:
        raise RuntimeError(f"timed passes decoded different amounts of work: {sorted(counts)}")
    sentences, tokens = counts.pop()
    return SpeedResult(seconds=seconds, sentences=sentences, tokens=tokens, warmup_calls=n_warmup)


def speed_ratio(result: SpeedResult, reference: SpeedResult) -> dict[str, float]:
    """Throughput of ``result`` relative to ``reference`` (>1 means faster than the reference)."""
    return {
        "sentences_per_second": result.sentences_per_second / reference.sentences_per_second,
        "tokens_per_second": result.tokens_per_second / reference.tokens_per_second,
    }
