"""What every ``pet-*`` command shares: one logging format and one way of reporting a user's error.

:func:`command` wraps a tool's ``main(argv) -> int``: it sets up logging as ``[tool HH:MM:SS] message``
on standard error, runs the tool, and turns a :class:`~pet_fairseq.core.errors.PetError` into one
``error: MESSAGE`` line and exit status :data:`~pet_fairseq.core.errors.EXIT_USER_ERROR` (argparse's
status for a bad option, too). Ctrl-C ends with status 130 and one line. The wrapped ``main`` is what
both ``python -m pet_fairseq.X`` and the ``pet-X`` console script call.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Optional, Sequence

from pet_fairseq.core.errors import EXIT_USER_ERROR, PetError

Main = Callable[[Optional[Sequence[str]]], int]


def setup_logging(tool: str, level: int = logging.INFO) -> None:
    """One handler on the root logger, ``[tool HH:MM:SS] message`` on standard error, at ``level``.

    Plain stream handlers installed before (importing fairseq's command modules installs one, at DEBUG)
    are replaced; other handlers (a test's log capture) are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # noqa: E721  (subclasses are somebody else's)
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[{tool} %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)


def command(tool: str, level: int = logging.INFO) -> Callable[[Main], Main]:
    """Decorate ``main(argv) -> int`` of the command ``tool`` (see the module docstring)."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Optional[Sequence[str]] = None) -> int:
            setup_logging(tool, level)
            try:
                return main(argv)
            except PetError as err:
                print(f"error: {err}", file=sys.stderr, flush=True)
                return EXIT_USER_ERROR
            except KeyboardInterrupt:
                print(f"{tool}: interrupted", file=sys.stderr, flush=True)
                return 130

        return run

    return wrap
