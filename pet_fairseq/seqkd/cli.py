"""``python -m pet_fairseq.seqkd``: decode a data-bin's split with the teacher into a new data-bin.

    python -m pet_fairseq.seqkd DATA_BIN --teacher TEACHER.pt --out DISTILLED_BIN [--beam 5]
        [--engine fairseq|ctranslate2] [--num-shards N] [--shard-id I] [--degenerate reference|keep|drop]
        [--max-replaced 0.2]

Without ``--shard-id`` every unfinished shard is decoded in turn, then all are merged; with it only
that shard is decoded (start one process per shard, on one machine or several sharing the work
folder), and a later call without it (or with ``--merge-only``) merges. A rerun skips finished
shards, so an interrupted run resumes where it stopped.

Every option, ``--out`` and ``--work-dir`` are checked before the split is loaded; each problem is
one line (``error: ...``, exit status 2). The merge refuses a corpus in which more than
``--max-replaced`` of the hypotheses would be replaced by references (or dropped), keeping the
shards so that accepting it with ``--max-replaced 1`` decodes nothing again.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from pet_fairseq.core.arguments import OwnDefault, add_decoding_args, add_device_args, add_language_args
from pet_fairseq.core.cli import command
from pet_fairseq.core.ctranslate2 import decoding
from pet_fairseq.core.files import file_digest
from pet_fairseq.seqkd.corpus import (
    DEGENERATE_POLICIES,
    MAX_REPLACED,
    SeqKDError,
    Split,
    finished_shards,
    infer_pair,
    load_split,
    merge,
    shard_range,
    shard_stem,
    source_recipe,
    write_shard,
)
from pet_fairseq.seqkd.engines import DecodeOptions, TeacherDecoder, load_teacher_decoder

logger = logging.getLogger("pet_fairseq.seqkd")

#: the file that marks a work folder this tool created, and may therefore delete whole after the merge
WORK_MARKER = ".pet-seqkd-work"


#: the decoding defaults a seq-KD corpus needs, and why (shown in --help). They are part of every shard's
#: fingerprint and of the commands a study records for its corpora, so changing one re-decodes those corpora.
OWN_DEFAULTS = {
    "batch_size": OwnDefault(128, "a corpus is decoded for throughput, in batches also capped by --max-tokens"),
    "max_len_a": OwnDefault(1.2, "a corpus hypothesis is cut relative to its source, so a teacher that runs on "
                                 "stops early and is flagged (--degenerate) instead of filling 200 tokens"),
    "max_len_b": OwnDefault(10, "see --max-len-a"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-seqkd", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_bin", type=Path, help="binarized data (fairseq-preprocess output) holding --split")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's fairseq checkpoint (.pt)")
    p.add_argument("--out", type=Path, required=True, help="the distilled data-bin to write (same dictionaries)")
    p.add_argument("--split", default="train", help="the split whose targets are replaced; others are copied")
    p.add_argument("--engine", choices=("fairseq", "ctranslate2"), default="fairseq",
                   help="fairseq's SequenceGenerator, or the teacher converted to CTranslate2 (faster)")
    p.add_argument("--compute-type", default="float32",
                   help="CTranslate2 weights: float32 reproduces fairseq's output, int8 is faster")
    decoding = add_decoding_args(p, own=OWN_DEFAULTS, note="a batch holds at most --batch-size sentences and at most "
                                 "--max-tokens padded source tokens")
    decoding.add_argument("--max-tokens", type=int, default=6000, help="most padded source tokens per batch")
    decoding.add_argument("--lenpen", type=float, default=1.0, help="length penalty (scores / length^lenpen)")
    p.add_argument("--num-shards", type=int, default=16, help="contiguous shards (the unit of resuming and splitting)")
    p.add_argument("--shard-id", type=int, default=None, help="decode only this shard, do not merge")
    p.add_argument("--merge-only", action="store_true", help="decode nothing; merge the finished shards")
    p.add_argument("--degenerate", choices=DEGENERATE_POLICIES, default="reference",
                   help="what replaces an empty hypothesis or one that hit the length limit: the reference "
                        "target (reference), nothing (keep), or the pair is dropped (drop)")
    p.add_argument("--max-replaced", type=float, default=MAX_REPLACED,
                   help="refuse the corpus when more than this share (0-1) of the hypotheses would be replaced by "
                        "references or dropped (--degenerate reference|drop): a sign of an undertrained teacher or "
                        "a length limit too short; 1 accepts any corpus")
    p.add_argument("--work-dir", type=Path, default=None, help="where shards are kept (default: OUT.shards)")
    p.add_argument("--keep-shards", action="store_true", help="keep the work folder after merging")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    add_language_args(p)
    add_device_args(p)
    return p


#: integer options and the least value each accepts
AT_LEAST = {"beam": 1, "max_len_b": 1, "batch_size": 1, "max_tokens": 1, "num_shards": 1, "threads": 0,
            "parallel_batches": 1}


def option(name: str) -> str:
    """The command-line spelling of an argparse destination (``max_len_b`` -> ``--max-len-b``)."""
    return "--" + name.replace("_", "-")


def check_options(args: argparse.Namespace) -> None:
    """Refuse impossible numbers, contradicting options and an unusable device (nothing is read yet)."""
    problems = [f"{option(name)} must be >= {least} (got {getattr(args, name)})"
                for name, least in AT_LEAST.items() if getattr(args, name) < least]
    if args.shard_id is not None and args.num_shards >= 1 and not 0 <= args.shard_id < args.num_shards:
        problems.append(f"--shard-id must be in 0..{args.num_shards - 1} for --num-shards {args.num_shards} "
                        f"(got {args.shard_id})")
    if not (math.isfinite(args.max_len_a) and args.max_len_a >= 0):
        problems.append(f"--max-len-a must be a finite number >= 0 (got {args.max_len_a})")
    if not math.isfinite(args.lenpen):
        problems.append(f"--lenpen must be a finite number (got {args.lenpen})")
    if not 0 <= args.max_replaced <= 1:  # also false for nan
        problems.append(f"--max-replaced must be a share between 0 and 1 (got {args.max_replaced})")
    if args.merge_only and args.shard_id is not None:
        problems.append("--merge-only merges every shard and --shard-id decodes one without merging: pass one of them")
    if args.engine == "fairseq" and args.parallel_batches != 1:
        problems.append("--parallel-batches applies to --engine ctranslate2; fairseq uses --threads inside each batch")
    elif args.engine == "ctranslate2" and args.parallel_batches >= 1 and args.threads >= 0:
        try:
            decoding.check_parallel_batches(args.parallel_batches, args.threads or torch.get_num_threads())
        except ValueError as exc:
            problems.append(f"--parallel-batches {args.parallel_batches} with --threads {args.threads}: {exc}")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    elif args.device != "cpu":
        problems.append(f"--device must be cpu, cuda or cuda:N (got {args.device})")
    if problems:
        raise SeqKDError("; ".join(problems))


def check_writable_folder(path: Path, flag: str) -> None:
    """``path`` (a folder to create or replace) must not be a file and must be creatable in a writable folder."""
    if path.exists() and not path.is_dir():
        raise SeqKDError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SeqKDError(f"{flag} {path} lies under {parent}, which is a file, not a folder; choose another {flag}")
    try:  # a real attempt: os.access says yes to root even on read-only file systems
        os.rmdir(tempfile.mkdtemp(prefix=".seqkd-write-test-", dir=parent))
    except OSError as err:
        raise SeqKDError(f"{flag} {path}: cannot create folders in {parent} ({err.strerror}); choose a writable "
                         f"location for {flag}") from None


def check_paths(args: argparse.Namespace) -> Path:
    """Check the teacher, the data-bin, ``--out`` and the work folder before anything is loaded; the work folder."""
    if not args.teacher.is_file():
        raise SeqKDError(f"teacher checkpoint {args.teacher} does not exist: pass the teacher's .pt with --teacher")
    if not args.data_bin.is_dir():
        raise SeqKDError(f"data-bin {args.data_bin} is not a folder; binarize your data first (data_prep/prepare-*.sh)")
    out = args.out.resolve()
    if out == args.data_bin.resolve():
        raise SeqKDError("--out must differ from the data-bin: the distilled corpus never overwrites its source")
    for what, path in (("the data-bin", args.data_bin), ("the teacher", args.teacher)):
        if path.resolve().is_relative_to(out):
            raise SeqKDError(f"--out {args.out} holds {what} ({path}), which replacing --out would delete; "
                             "choose another --out")
    check_writable_folder(args.out, "--out")
    if args.shard_id is None and args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise SeqKDError(f"{args.out} exists and is not empty; pass --force to replace it, or choose another --out")
    if args.work_dir is not None:
        check_writable_folder(args.work_dir, "--work-dir")
        check_work_dir(args)
        return args.work_dir
    work = args.out.with_name(args.out.name + ".shards")
    if work.exists() and not work.is_dir():
        raise SeqKDError(f"{work} (the work folder of --out {args.out}) is a file; move it away or pass --work-dir")
    return work


def check_work_dir(args: argparse.Namespace) -> None:
    """Refuse a ``--work-dir`` that is, holds or lies inside the data-bin or ``--out``, or holds the teacher."""
    work = args.work_dir.resolve()
    for what, flag, path in (("the data-bin", "DATA_BIN", args.data_bin), ("--out", "--out", args.out)):
        other = path.resolve()
        if work == other:
            relation = f"is {what}"
        elif work.is_relative_to(other):
            relation = f"lies inside {what} {path}"
        elif other.is_relative_to(work):
            relation = f"holds {what} {path}"
        else:
            continue
        raise SeqKDError(f"--work-dir {args.work_dir} {relation}: the work folder must be a folder of its own, "
                         f"apart from {flag}; choose another --work-dir (or leave it out for {args.out}.shards)")
    if args.teacher.resolve().is_relative_to(work):
        raise SeqKDError(f"--work-dir {args.work_dir} holds the teacher ({args.teacher}); choose another --work-dir "
                         f"(or leave it out for {args.out}.shards)")


def prepare_work_dir(work: Path) -> None:
    """Create the work folder and mark it as this tool's (:data:`WORK_MARKER`), unless it exists already."""
    if work.exists():
        return
    try:
        work.mkdir(parents=True)
    except FileExistsError:  # another --shard-id process created it a moment ago, and marks it
        return
    (work / WORK_MARKER).write_text("a work folder created by pet-seqkd; deleted after the merge\n", encoding="utf-8")


def remove_work_dir(work: Path, num_shards: int, default: bool) -> None:
    """Delete the work folder after the merge if this tool created it (:data:`WORK_MARKER`).

    In a folder it did not create (an existing ``--work-dir``, or ``OUT.shards`` of an older version), only the
    shards and the converted teacher it wrote are deleted; the folder itself goes only if it is the default
    ``OUT.shards`` and nothing else is left in it.
    """
    if (work / WORK_MARKER).is_file():
        shutil.rmtree(work)
        return
    stem = shard_stem(work, 0, num_shards).name.replace("0000", "*", 1)
    for path in work.glob(stem + ".*"):
        if path.is_file():
            path.unlink()
    for converted in work.glob("ct2-*"):
        if converted.is_dir():
            shutil.rmtree(converted)
    if default and not any(work.iterdir()):
        work.rmdir()
    else:
        logger.info("removed the shards from %s, a folder this run did not create (it is kept)", work)


def fingerprint(args: argparse.Namespace, split: Split) -> Dict[str, object]:
    """What makes two shards interchangeable: teacher, source split, decoding options, shard count."""
    return {
        "teacher_sha256": file_digest(args.teacher),
        "source_sha256": file_digest(*(Path(str(split.prefix(split.src)) + ext) for ext in (".bin", ".idx"))),
        "split": split.name, "pair": f"{split.src}-{split.tgt}", "engine": args.engine,
        "compute_type": args.compute_type if args.engine == "ctranslate2" else "model dtype",
        "beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a, "max_len_b": args.max_len_b,
        "batch_size": args.batch_size, "max_tokens": args.max_tokens, "num_shards": args.num_shards,
    }


def decode_shard(decoder: TeacherDecoder, split: Split, indices: range, args: argparse.Namespace,
                 progress: tqdm) -> tuple[List[List[int]], Dict[str, object]]:
    """Hypotheses of the sentences ``indices`` (in order) and the shard's record without fingerprint."""
    eos = split.src_dict.eos()
    sources = [[t for t in split.sources[i].tolist() if t != eos] for i in indices]
    batches = decoding.make_batches([len(s) for s in sources], args.batch_size, args.max_tokens)
    hypotheses: List[Optional[List[int]]] = [None] * len(sources)
    empty, runaway, tokens, start = [], [], 0, time.perf_counter()
    for batch in batches:
        for local, (ids, at_limit) in zip(batch, decoder.decode([sources[i] for i in batch])):
            hypotheses[local] = ids
            tokens += len(ids) + 1
            if not ids:
                empty.append(indices[local])
            elif at_limit:
                runaway.append(indices[local])
        seconds = time.perf_counter() - start
        progress.update(len(batch))
        progress.set_postfix(tok_s=f"{tokens / seconds:.0f}" if seconds else "-")
    record = {"start": indices.start, "stop": indices.stop, "seconds": time.perf_counter() - start,
              "tokens": tokens, "empty": sorted(empty), "runaway": sorted(runaway)}
    return hypotheses, record  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    check_options(args)
    work = check_paths(args)
    if source_recipe(args.data_bin) is None:  # a broken recipe is refused here, before decoding
        logger.warning("%s has no %s: the seq-KD data-bin will have none either, and translating with a model "
                       "trained on it needs --recipe", args.data_bin, "preprocessing.json")
    src, tgt = args.source_lang, args.target_lang
    if not (src and tgt):
        src, tgt = infer_pair(args.data_bin, args.split)
    split = load_split(args.data_bin, args.split, src, tgt)
    if args.threads:
        torch.set_num_threads(args.threads)
    prepare_work_dir(work)
    prints = fingerprint(args, split)
    done = set(finished_shards(work, args.num_shards, prints))
    wanted = [args.shard_id] if args.shard_id is not None else list(range(args.num_shards))
    todo = [] if args.merge_only else [s for s in wanted if s not in done]
    if done & set(wanted):
        logger.info("%d of %d shards already finished in %s; decoding %d", len(done & set(wanted)), len(wanted), work, len(todo))
    if todo:
        options = DecodeOptions(args.beam, args.lenpen, args.max_len_a, args.max_len_b)
        decoder = load_teacher_decoder(args.engine, args.teacher, split, options,
                                       work / f"ct2-{args.compute_type}-{prints['teacher_sha256'][:12]}",
                                       args.compute_type, args.device, args.threads, args.parallel_batches)
        total = sum(len(shard_range(len(split), args.num_shards, s)) for s in todo)
        with tqdm(total=total, unit="sent", desc=f"seq-KD {args.engine} beam {args.beam}", file=sys.stderr) as progress:
            for shard_id in todo:
                hypotheses, record = decode_shard(decoder, split, shard_range(len(split), args.num_shards, shard_id),
                                                  args, progress)
                write_shard(work, shard_id, args.num_shards, hypotheses, split.tgt_dict.eos(), len(split.tgt_dict),
                            {**record, "fingerprint": prints})
    if args.shard_id is not None:
        logger.info("shard %d of %d finished in %s; merge with the same options and --merge-only (or without "
                    "--shard-id) once every shard is finished", args.shard_id, args.num_shards, work)
        return 0
    summary = merge(split, work, args.out, args.num_shards, prints, args.degenerate, args.force, args.max_replaced)
    if not args.keep_shards:
        remove_work_dir(work, args.num_shards, default=args.work_dir is None)
    if summary["warning"]:
        print(summary["warning"], file=sys.stderr)
    print(f"seq-KD corpus: {summary['written']:,} of {summary['sentences']:,} {split.name} pairs -> {args.out}; "
          f"{summary['empty']} empty and {summary['runaway']} length-limited hypotheses ({args.degenerate}); "
          f"recipe: {', '.join(summary['recipe']) or 'none'}; "
          f"decoding {summary['decode_seconds']:.0f} s, {summary['sentences_per_second']} sent/s, "
          f"{summary['tokens_per_second']} tok/s", file=sys.stderr)
    return 0


@command("seqkd")
def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))
