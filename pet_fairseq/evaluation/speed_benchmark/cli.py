"""The speed benchmark's command line: its options, their checks before any model is built, and ``main``.

    pet-speed-benchmark --archs transformer_iwslt_de_en,pet_iwslt_de_en --json speed.json

(also ``python -m pet_fairseq.evaluation.speed_benchmark`` and ``scripts/benchmark_speed.sh``; what it
measures: :mod:`pet_fairseq.evaluation.speed_benchmark`). ``--source-lang``/``--target-lang``,
``--batch-size`` and ``--threads`` come from the shared option groups (:mod:`pet_fairseq.core.arguments`);
the language pair has its own default, de-en, because the models are built here and no checkpoint
records a pair. ``--beams`` and ``--ct2-parallel-batches`` are lists: every value is timed.

Invariant: :func:`validate_args` refuses every option that cannot work (with argparse's one-line error
and exit status 2) before a model is built, and leaves the parsed lists (``beam_list``, ``engine_list``,
``parallel_list``, ``arch_list``) and the resolved thread count on ``args`` for the run.
"""

from __future__ import annotations

import argparse
import difflib
import logging
from pathlib import Path
from typing import Sequence

from pet_fairseq.core.arguments import (
    OwnDefault,
    add_decoding_args,
    add_device_args,
    add_language_args,
    resolve_threads,
)
from pet_fairseq.core.cli import command
from pet_fairseq.core.ctranslate2.decoding import check_parallel_batches
from pet_fairseq.core.errors import ConfigError
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.report import write_benchmark_json
from pet_fairseq.evaluation.speed_benchmark.inputs import DEFAULT_BPE_DIR, shortlist_files
from pet_fairseq.evaluation.speed_benchmark.models import ENGINES
from pet_fairseq.evaluation.speed_benchmark.tables import profile_heading, profile_table, speed_table
from pet_fairseq.evaluation.speed_benchmark.timing import run

logger = logging.getLogger(__name__)

#: why the language pair has its own default here
BUILT_HERE = ("the models are built here with random weights, so no checkpoint records a pair; de-en is the pair of "
              "the default data (--bpe-dir)")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(prog="pet-speed-benchmark",
                                description="Decode speed of named architectures at their real sizes, fairseq and "
                                            "CTranslate2 side by side.")
    p.add_argument("--archs", required=True,
                   help="comma-separated registered architectures, e.g. transformer_iwslt_de_en,pet_iwslt_de_en; "
                   "the first is the reference")
    p.add_argument("--dictionary", type=Path,
                   help="fairseq dict.txt used on both sides (default: counted from --bpe-dir's valid/test files)")
    p.add_argument("--bpe-dir", type=Path, default=DEFAULT_BPE_DIR,
                   help="folder with BPE'd {valid,test}.{de,en} (default: %(default)s)")
    p.add_argument("--source-text", type=Path,
                   help="BPE'd source sentences, one per line (default: BPE_DIR/test.de)")
    add_language_args(p, own={"source_lang": OwnDefault("de", BUILT_HERE), "target_lang": OwnDefault("en", BUILT_HERE)})
    p.add_argument("--sentences", type=int, default=600, help="sentences timed in the throughput modes (default: 600)")
    p.add_argument("--latency-sentences", type=int, default=50,
                   help="sentences timed one at a time in the batch-1 modes (default: 50; 0 skips them)")
    add_decoding_args(p, only=("batch_size",),
                      note="--batch-size is the batch of the throughput modes; the latency modes decode one sentence at "
                           "a time. Every beam of --beams is timed, and every model generates exactly --output-length "
                           "tokens, so there is no length limit to set.")
    p.add_argument("--beams", default="5,1", help="beam sizes, 1 = greedy (default: 5,1)")
    p.add_argument("--output-length", type=int, default=31,
                   help="tokens generated per sentence, EOS included, for every model (default: 31 = 30 + EOS)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="any of fairseq, ctranslate2, ctranslate2-shortlist (default: all three)")
    p.add_argument("--shortlist-bitext", type=Path,
                   help="prefix of the BPE'd bitext counted for the shortlist, PREFIX.{source,target} lang "
                   "(default: BPE_DIR/valid)")
    p.add_argument("--shortlist-per-token", type=int,
                   help="shortlist candidates per source token (default: the export's, 10)")
    p.add_argument("--ct2-parallel-batches", default="1",
                   help="comma-separated: each CTranslate2 engine decodes every batch as this many parts side by side, "
                   "each on threads / N threads; 1 = one worker on all threads. Unlike the other tools' single "
                   "--parallel-batches, every value listed is timed (default: 1; e.g. 1,2 times both)")
    p.add_argument("--quantization", default="int8", help="CTranslate2 weight type at conversion (default: int8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per mode; median reported (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over the first batch first (default: 1)")
    add_device_args(p, device=False, parallel_batches=False)
    p.add_argument("--profile-sentences", type=int, default=128,
                   help="sentences of the profiler run (first mode's batch and beam; default: 128; 0 skips it)")
    p.add_argument("--seed", type=int, default=1, help="random initialisation seed (default: 1)")
    p.add_argument("--work-dir", type=Path,
                   help="keep the random checkpoints and CTranslate2 models here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return p


def parse_int_list(text: str, option: str) -> list[int]:
    """``"5,1"`` -> [5, 1]; a clear error for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{option} {text!r}: give comma-separated whole numbers >= 1, e.g. 5,1")
    return values


def check_archs(names: Sequence[str]) -> list[str]:
    """The names, if every one is a registered architecture; else an error suggesting close names."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    import pet_fairseq  # noqa: F401  (registers the plugin's architectures)

    if not names:
        raise EvaluationError("--archs: give at least one architecture")
    for name in names:
        if name not in ARCH_MODEL_NAME_REGISTRY:
            close = difflib.get_close_matches(name, list(ARCH_MODEL_NAME_REGISTRY), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EvaluationError(f"--archs: unknown architecture {name!r}{hint}")
    if len(set(names)) != len(names):
        raise EvaluationError(f"--archs lists an architecture twice: {', '.join(names)}")
    return list(names)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject options that cannot work before any model is built; resolve the lists and ``--threads``."""
    try:
        args.beam_list = parse_int_list(args.beams, "--beams")
        args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
        args.parallel_list = parse_int_list(args.ct2_parallel_batches, "--ct2-parallel-batches")
        args.arch_list = check_archs([a.strip() for a in args.archs.split(",") if a.strip()])
        args.threads = resolve_threads(args.threads)
    except (ValueError, EvaluationError, ConfigError) as exc:
        parser.error(str(exc))
    unknown = [e for e in args.engine_list if e not in ENGINES]
    if unknown or not args.engine_list:
        parser.error(f"--engines {args.engines!r}: choose from {', '.join(ENGINES)}")
    if min(args.sentences, args.batch_size, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--sentences, --batch-size, --repeats and --threads must be >= 1, --warmup >= 0")
    try:
        for parallel in args.parallel_list:
            check_parallel_batches(parallel, args.threads)
    except ValueError as exc:
        parser.error(f"--ct2-parallel-batches {args.ct2_parallel_batches} with --threads {args.threads}: {exc}")
    if len(set(args.parallel_list)) != len(args.parallel_list):
        parser.error(f"--ct2-parallel-batches {args.ct2_parallel_batches} lists a value twice")
    if args.shortlist_per_token is not None and args.shortlist_per_token < 1:
        parser.error(f"--shortlist-per-token {args.shortlist_per_token}: must be >= 1")
    if min(args.latency_sentences, args.profile_sentences) < 0:
        parser.error("--latency-sentences and --profile-sentences must be >= 0")
    if args.output_length < 2:
        parser.error(f"--output-length {args.output_length}: must be >= 2 (EOS included)")
    if args.dictionary is not None and not args.dictionary.is_file():
        parser.error(f"--dictionary {args.dictionary} does not exist")
    if args.source_text is not None and not args.source_text.is_file():
        parser.error(f"--source-text {args.source_text} does not exist")
    if args.dictionary is not None and args.shortlist_bitext is None and "ctranslate2-shortlist" in args.engine_list:
        parser.error("--dictionary is given, so the default shortlist bitext (BPE_DIR/valid) may not match it: pass "
                     "--shortlist-bitext PREFIX (BPE'd with that dictionary) or leave ctranslate2-shortlist out of "
                     "--engines")
    if args.shortlist_bitext is not None and "ctranslate2-shortlist" in args.engine_list:
        try:
            shortlist_files(args.shortlist_bitext, args)
        except EvaluationError as exc:
            parser.error(str(exc))


@command("speed-benchmark")
def main(argv: list[str] | None = None) -> int:
    """Print the speed table (and the profile table); with ``--json``, write every figure too."""
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_args(parser, args)
    report = run(args)
    print(speed_table(report))
    if report["profile"]:
        print(f"\n{profile_heading(report)}\n")
        print(profile_table(report["profile"]))
    if args.json:
        write_benchmark_json(args.json, "cpu", args.threads, report)
        logger.info("wrote %s", args.json)
    return 0
