"""The base class of every error a user can fix, and how such an error reaches the console.

Every tool's error class (``TranslateError``, ``SeqKDError``, ``SpecError``, ...), the option
checks of the fairseq components (:class:`ConfigError`) and the input checks of the core
(:class:`InputError`) derive from :class:`PetError`. Its message is one line that names the
problem and the fix. A ``pet-*`` command prints it as ``error: MESSAGE`` and exits with
:data:`EXIT_USER_ERROR` (:func:`pet_fairseq.core.cli.command`); inside fairseq's own commands
(``fairseq-train``, ``fairseq-generate`` with ``--user-dir pet_fairseq``) the hook of
:func:`report_user_errors` prints the same line instead of a traceback, and the exit status is
Python's for an uncaught exception (1); a plain ``Exception`` that fairseq raised while handling a
``PetError`` (fairseq-train's "Cannot load model parameters ... ensure that the architectures match"
around a criterion's refusal to resume) is reported as that ``PetError``. Any other exception keeps
its traceback: it is a bug.

This module imports nothing beyond the standard library, so the torch-free CTranslate2 worker
can use it.
"""

from __future__ import annotations

import sys
from types import TracebackType

EXIT_USER_ERROR = 2


class PetError(Exception):
    """An error the user can fix; the message is one line naming the problem and the fix."""


class ConfigError(PetError, ValueError):
    """An option or an input file that cannot work (a ``ValueError`` too, for callers that catch those)."""


class MissingFileError(PetError, FileNotFoundError):
    """A file the user named does not exist (a ``FileNotFoundError`` too)."""


class InputError(PetError):
    """A checkpoint, data-bin or CTranslate2 model directory that the core's readers and checks refuse.

    Not what it should be (not a fairseq checkpoint, a subset that is not binarized), or not matching
    the others (language pair, dictionaries, vocabularies). Each tool re-raises it as its own error
    or reports it as it is.
    """


class ExportError(PetError):
    """A checkpoint that cannot be exported (unrolled, converted to CTranslate2, given a vocabulary
    shortlist), with the reason and what to do."""


def user_error(value: BaseException) -> PetError | None:
    """``value`` if it is a :class:`PetError`, else the one a chain of plain ``Exception`` wrappers was raised from
    or while handling (what fairseq does with an error of the plugin); ``None`` for anything else."""
    seen = set()
    while type(value) is Exception and id(value) not in seen:
        seen.add(id(value))
        value = value.__cause__ or value.__context__
    return value if isinstance(value, PetError) else None


def report_user_errors() -> None:
    """Print an uncaught :class:`PetError` as one ``error:`` line; leave every other exception to the hook before.

    Installed once (importing :mod:`pet_fairseq` does it); a second call changes nothing.
    """
    previous = sys.excepthook
    if getattr(previous, "pet_fairseq", False):
        return

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        error = user_error(value)
        if error is not None:
            print(f"error: {error}", file=sys.stderr, flush=True)
        else:
            previous(kind, value, traceback)

    hook.pet_fairseq = True  # type: ignore[attr-defined]
    sys.excepthook = hook
