"""Decode-speed measurement: warm-up, then the median of N timed passes, several decoders interleaved.

The one timing loop behind every speed figure of the project: the comparison tool's decoding
processes (fairseq and CTranslate2), the length benchmark and the paper-size speed benchmark.
Standard library only, so the torch-free CTranslate2 worker (:mod:`pet_fairseq.evaluation.ct2_worker`)
imports it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

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


def measure_side_by_side(
    decode_fns: Sequence[DecodeFn],
    n_repeats: int,
    n_warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    warmup_fns: Sequence[Callable[[], object]] | None = None,
    on_pass: Callable[[], object] | None = None,
) -> list[SpeedResult]:
    """Time several decoders on the same work, interleaved: the one timing loop of every speed figure.

    Each decoder's ``warmup_fns[i]`` (default ``decode_fns[i]``) is called ``n_warmup`` times untimed;
    then ``n_repeats`` rounds each call every ``decode_fns[i]`` once, in order, timed with ``clock``,
    so a change in machine load during the run hits every decoder alike and their ratios stay
    comparable. ``on_pass`` is called after every warm-up and timed call (progress bars).

    Every timed pass of a decoder must decode the same number of sentences and tokens (beam search
    is deterministic); a pass that differs raises ``RuntimeError`` rather than averaging over
    different work. Returns one :class:`SpeedResult` per decoder, in order.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if n_warmup < 0:
        raise ValueError(f"n_warmup must be >= 0, got {n_warmup}")
    warmups = list(warmup_fns) if warmup_fns is not None else list(decode_fns)
    if len(warmups) != len(decode_fns):
        raise ValueError(f"{len(warmups)} warm-up functions for {len(decode_fns)} decoders")
    tick = on_pass or (lambda: None)
    for warmup in warmups:
        for _ in range(n_warmup):
            warmup()
            tick()
    seconds: list[list[float]] = [[] for _ in decode_fns]
    counts: list[set[tuple[int, int]]] = [set() for _ in decode_fns]
    for _ in range(n_repeats):
        for index, decode in enumerate(decode_fns):
            start = clock()
            counts[index].add(tuple(decode()))
            seconds[index].append(clock() - start)
            tick()
    results = []
    for index, work in enumerate(counts):
        if len(work) != 1:
            raise RuntimeError(f"timed passes of decoder {index} decoded different amounts of work: {sorted(work)}")
        sentences, tokens = work.pop()
        results.append(SpeedResult(seconds=seconds[index], sentences=sentences, tokens=tokens, warmup_calls=n_warmup))
    return results


def measure_speed(
    decode_fn: DecodeFn,
    n_repeats: int,
    n_warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    warmup_fn: Callable[[], object] | None = None,
) -> SpeedResult:
    """One decoder: call ``warmup_fn`` (default ``decode_fn``) ``n_warmup`` times untimed, then time
    ``n_repeats`` calls of ``decode_fn`` with ``clock`` (see :func:`measure_side_by_side`)."""
    warmups = None if warmup_fn is None else [warmup_fn]
    return measure_side_by_side([decode_fn], n_repeats, n_warmup, clock, warmups)[0]


def speed_ratio(result: SpeedResult, reference: SpeedResult) -> dict[str, float]:
    """Throughput of ``result`` relative to ``reference`` (>1 means faster than the reference)."""
    return {
        "sentences_per_second": result.sentences_per_second / reference.sentences_per_second,
        "tokens_per_second": result.tokens_per_second / reference.tokens_per_second,
    }
