"""Option groups the commands share: one name, one default and one help text per option.

A command adds the groups it needs (``add_language_args(parser)``, ...) instead of declaring the
options itself, so ``--beam``, ``--threads`` or ``--source-lang`` mean and default to the same thing
in every ``pet-*`` command. :func:`check_positive` and :func:`resolve_threads` turn the parsed values
into what the libraries take.

The decoding defaults are the ones a user of ``pet-translate`` gets (beam 5, at most 200 output tokens,
no length ratio): the comparison tool and the study report BLEU with them too. Commands with another
purpose declare their own knobs under other names (the seq-KD corpus's length cap, the pruning score).
"""

from __future__ import annotations

import argparse
import os
from typing import Iterable

from pet_fairseq.core.errors import ConfigError

BEAM = 5
BATCH_SIZE = 64
MAX_LEN_A = 0.0
MAX_LEN_B = 200


def add_language_args(parser: argparse.ArgumentParser, required: bool = False) -> argparse._ArgumentGroup:
    """``--source-lang`` / ``--target-lang``."""
    group = parser.add_argument_group("language pair")
    default = "" if required else (" (default: the one the model records, else the data-bin's only pair; a "
                                   "direction other than the model's is refused)")
    group.add_argument("--source-lang", required=required, default=None, metavar="LANG", help=f"source language{default}")
    group.add_argument("--target-lang", required=required, default=None, metavar="LANG", help=f"target language{default}")
    return group


def add_decoding_args(parser: argparse.ArgumentParser, max_tokens: bool = False) -> argparse._ArgumentGroup:
    """``--beam``, ``--batch-size``, ``--max-len-a``, ``--max-len-b`` with the defaults users decode with.

    With ``max_tokens``, ``--max-tokens`` is offered instead of ``--batch-size`` (one or the other);
    ``--batch-size`` is then ``None`` until :func:`resolve_batch_size`.
    """
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam", type=int, default=BEAM, help="beam size; 1 = greedy (default: %(default)s)")
    size = group.add_mutually_exclusive_group() if max_tokens else group
    size.add_argument("--batch-size", type=int, default=None if max_tokens else BATCH_SIZE,
                      help=f"sentences per decoding batch (default: {BATCH_SIZE})")
    if max_tokens:
        size.add_argument("--max-tokens", type=int, default=None, help="tokens per batch instead of --batch-size")
    group.add_argument("--max-len-a", type=float, default=MAX_LEN_A,
                       help="output length limit: a * source length + b tokens (default: a = %(default)s)")
    group.add_argument("--max-len-b", type=int, default=MAX_LEN_B, help="see --max-len-a (default: b = %(default)s)")
    return group


def resolve_batch_size(args: argparse.Namespace) -> None:
    """Fill in ``--batch-size`` where neither it nor ``--max-tokens`` was given."""
    if args.batch_size is None and getattr(args, "max_tokens", None) is None:
        args.batch_size = BATCH_SIZE


def add_device_args(parser: argparse.ArgumentParser, device: bool = True, parallel_batches: bool = True,
                    parallel_aliases: tuple[str, ...] = ()) -> argparse._ArgumentGroup:
    """``--device``, ``--threads`` and (for CTranslate2) ``--parallel-batches`` (also spelt ``parallel_aliases``)."""
    group = parser.add_argument_group("device and threads")
    if device:
        group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--threads", type=int, default=0,
                       help="CPU threads; 0 = one per core of this machine (default: %(default)s)")
    if parallel_batches:
        group.add_argument("--parallel-batches", *parallel_aliases, dest="parallel_batches", type=int, default=1,
                           help="CTranslate2: decode each batch as N parts side by side, each on threads / N threads; "
                                "faster for small models on several cores (default: %(default)s)")
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
