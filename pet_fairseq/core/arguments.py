"""Option groups the commands share: one name, one default and one help text per option.

A command adds the groups it needs (``add_language_args(parser)``, ...) instead of declaring the
options itself, so ``--beam``, ``--threads`` or ``--source-lang`` mean and default to the same thing
in every ``pet-*`` command. :func:`check_positive` and :func:`resolve_threads` turn the parsed values
into what the libraries take.

The decoding defaults are the ones a user of ``pet-translate`` gets (beam 5, at most 200 output tokens,
no length ratio): the comparison tool and the study report BLEU with them too. Commands with another
purpose declare their own knobs under other names (the seq-KD corpus's ``--max-tokens``, the pruning
score, the speed benchmark's ``--beams`` sweep).

Invariant: an option of these groups has the same destination and default in every command
(:data:`SHARED_DEFAULTS`; ``tests/test_cli.py`` checks every command's parser). A command whose
purpose needs another default (the seq-KD corpus's length rule, the length benchmark's small batches
of long inputs) passes it as :class:`OwnDefault` with the reason; the help then shows the default,
the shared one it replaces and why, and :func:`own_default_reason` reads the reason back.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Optional

from pet_fairseq.core.errors import ConfigError

BEAM = 5
BATCH_SIZE = 64
MAX_LEN_A = 0.0
MAX_LEN_B = 200

#: destination -> default of every option the groups declare
SHARED_DEFAULTS: dict[str, Any] = {
    "source_lang": None, "target_lang": None, "beam": BEAM, "batch_size": BATCH_SIZE, "max_len_a": MAX_LEN_A,
    "max_len_b": MAX_LEN_B, "device": "cpu", "threads": 0, "parallel_batches": 1,
}
#: how the help names a shared default that is not a plain value
_SHARED_TEXT = {"source_lang": "the model's pair", "target_lang": "the model's pair"}
#: the attribute of an argparse action that holds the reason for its own default
_REASON = "pet_own_default_reason"


@dataclass(frozen=True)
class OwnDefault:
    """A command's default for a shared option, other than :data:`SHARED_DEFAULTS`', and why it needs it."""

    value: Any
    why: str


def own_default_reason(action: argparse.Action) -> Optional[str]:
    """The reason an option's default differs from the shared one, or ``None`` where it does not."""
    return getattr(action, _REASON, None)


def _check_own(own: Mapping[str, OwnDefault], declared: Collection[str]) -> None:
    """Refuse (a programming error) an own default for an option the group does not declare, equal to the
    shared one, or without a reason."""
    for dest, default in own.items():
        if dest not in declared:
            raise ValueError(f"own default for {dest!r}, which this group does not declare ({', '.join(declared)})")
        if default.value == SHARED_DEFAULTS[dest] or not default.why.strip():
            raise ValueError(f"own default {default.value!r} for {dest!r}: give a value other than the shared "
                             f"{SHARED_DEFAULTS[dest]!r} and a reason")


def _add(group: Any, dest: str, text: str, own: Mapping[str, OwnDefault], *names: str, default_text: str = "%(default)s",
         **kwargs: Any) -> argparse.Action:
    """Add option ``dest`` (spelt ``--dest`` and ``names``) with its shared default or the command's own one.

    The help ``text`` gets ``(default: ...)`` appended: ``default_text``, or for an own default its value, the
    shared one it replaces and the reason.
    """
    if dest in own:
        shared = _SHARED_TEXT.get(dest, SHARED_DEFAULTS[dest])
        why = own[dest].why.replace("%", "%%")
        text = f"{text} (default: %(default)s rather than {shared}: {why})"
        default = own[dest].value
    else:
        text = f"{text} (default: {default_text})"
        default = kwargs.pop("default", SHARED_DEFAULTS[dest])
    kwargs.pop("default", None)
    action = group.add_argument("--" + dest.replace("_", "-"), *names, dest=dest, default=default, help=text, **kwargs)
    if dest in own:
        setattr(action, _REASON, own[dest].why)
    return action


def add_language_args(parser: argparse.ArgumentParser, required: bool = False,
                      own: Mapping[str, OwnDefault] | None = None, note: str | None = None) -> argparse._ArgumentGroup:
    """``--source-lang`` / ``--target-lang``; ``own``: the command's defaults (see :class:`OwnDefault`); ``note``: what
    the command does with them, shown under the group's title."""
    own = own or {}
    _check_own(own, ("source_lang", "target_lang"))
    group = parser.add_argument_group("language pair", note)
    for side in ("source", "target"):
        if required:
            group.add_argument(f"--{side}-lang", required=True, default=None, metavar="LANG", help=f"{side} language")
        else:
            _add(group, f"{side}_lang", f"{side} language", own, metavar="LANG",
                 default_text="the one the model records, else the data-bin's only pair; a direction other than the "
                              "model's is refused")
    return group


DECODING_OPTIONS = ("beam", "batch_size", "max_len_a", "max_len_b")


def add_decoding_args(parser: argparse.ArgumentParser, max_tokens: bool = False, *,
                      only: Collection[str] = DECODING_OPTIONS, own: Mapping[str, OwnDefault] | None = None,
                      note: str | None = None) -> argparse._ArgumentGroup:
    """``--beam``, ``--batch-size``, ``--max-len-a``, ``--max-len-b`` with the defaults users decode with.

    With ``max_tokens``, ``--max-tokens`` is offered instead of ``--batch-size`` (one or the other);
    ``--batch-size`` is then ``None`` until :func:`resolve_batch_size`. ``only``: the destinations of the
    options to declare (default: all four); ``own``: the command's defaults (:class:`OwnDefault`);
    ``note``: what the command does with them, shown under the group's title.
    """
    own = own or {}
    unknown = set(only) - set(DECODING_OPTIONS)
    if unknown:
        raise ValueError(f"no decoding option {', '.join(sorted(unknown))}; choose from {', '.join(DECODING_OPTIONS)}")
    _check_own(own, tuple(only))
    group = parser.add_argument_group("decoding", note)
    if "beam" in only:
        _add(group, "beam", "beam size; 1 = greedy", own, type=int)
    if "batch_size" in only:
        size = group.add_mutually_exclusive_group() if max_tokens else group
        if max_tokens:
            _add(size, "batch_size", "sentences per decoding batch", own, type=int, default=None,
                 default_text=f"{BATCH_SIZE}, unless --max-tokens is given")
            size.add_argument("--max-tokens", type=int, default=None, help="tokens per batch instead of --batch-size")
        else:
            _add(size, "batch_size", "sentences per decoding batch", own, type=int)
    if "max_len_a" in only:
        _add(group, "max_len_a", "output length limit: a * source length + b tokens", own, type=float,
             default_text="a = %(default)s")
    if "max_len_b" in only:
        _add(group, "max_len_b", "see --max-len-a", own, type=int, default_text="b = %(default)s")
    return group


def resolve_batch_size(args: argparse.Namespace) -> None:
    """Fill in ``--batch-size`` where neither it nor ``--max-tokens`` was given."""
    if args.batch_size is None and getattr(args, "max_tokens", None) is None:
        args.batch_size = BATCH_SIZE


def add_device_args(parser: argparse.ArgumentParser, device: bool = True, parallel_batches: bool = True,
                    parallel_aliases: tuple[str, ...] = (),
                    own: Mapping[str, OwnDefault] | None = None) -> argparse._ArgumentGroup:
    """``--device``, ``--threads`` and (for CTranslate2) ``--parallel-batches`` (also spelt ``parallel_aliases``);
    ``own``: the command's defaults (:class:`OwnDefault`)."""
    own = own or {}
    _check_own(own, ("device",) * device + ("threads",) + ("parallel_batches",) * parallel_batches)
    group = parser.add_argument_group("device and threads")
    if device:
        _add(group, "device", "cpu, cuda or cuda:N", own)
    _add(group, "threads", "CPU threads; 0 = one per core of this machine", own, type=int)
    if parallel_batches:
        _add(group, "parallel_batches", "CTranslate2: decode each batch as N parts side by side, each on threads / N "
             "threads; faster for small models on several cores", own, *parallel_aliases, type=int)
    return group


def resolve_threads(threads: int) -> int:
    """``--threads`` as a count: 0 is one thread per core of this machine; a negative count is refused."""
    if threads < 0:
        raise ConfigError(f"--threads must be at least 0 (0 = one per core), got {threads}")
    return threads if threads > 0 else (os.cpu_count() or 1)


def check_positive(args: argparse.Namespace, names: Iterable[str], minimum: int = 1) -> None:
    """Refuse any of the options ``names`` (attribute names) below ``minimum``; ``None`` is left alone."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
