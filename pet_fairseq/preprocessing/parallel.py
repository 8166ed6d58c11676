"""Order-preserving line mapping over a process pool, with a tqdm progress bar."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

# Below this many lines the pool start-up costs more than it saves.
MIN_LINES_FOR_POOL = 4000

_worker_fn: Callable[[str], str] | None = None


def _init_worker(factory: Callable[..., Callable[[str], str]], args: tuple) -> None:
    global _worker_fn
    _worker_fn = factory(*args)


def _apply(line: str) -> str:
    assert _worker_fn is not None
    return _worker_fn(line)


def map_lines(
    factory: Callable[..., Callable[[str], str]], args: tuple, lines: Iterable[str], workers: int,
    total: int | None = None, desc: str = "",
) -> Iterator[str]:
    """Yield ``factory(*args)(line)`` for every line, in order, using ``workers`` processes.

    ``factory`` builds the (possibly expensive) per-line function once per process; it and
    ``args`` must be picklable (module-level).
    """
    bar = dict(total=total, desc=desc, unit=" lines", disable=None, file=sys.stderr, mininterval=1.0)
    if workers <= 1 or (total is not None and total < MIN_LINES_FOR_POOL):
        fn = factory(*args)
        yield from (fn(line) for line in tqdm(lines, **bar))
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(factory, args)) as pool:
        yield from tqdm(pool.imap(_apply, lines, chunksize=512), **bar)
