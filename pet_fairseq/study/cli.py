"""``python -m pet_fairseq.study``: train a spec's variants under one budget, then print one table.

    python -m pet_fairseq.study --spec configs/study/multi30k.json --data-bin DATA_BIN --teacher T.pt \\
        --out runs/study [--only no-kd,seqkd-kd] [--jobs 2] [--bpe-codes CODES]

Writes ``OUT/study.md`` (the table), ``OUT/study.json`` (every figure) and ``OUT/curves.png``
(valid NLL and greedy valid BLEU against updates, one line per variant); with ``--tag T`` (or ``--only``)
``study-T.md`` etc., so a subset's table does not replace the whole study's. Logs: ``OUT/runs/NAME/train.log``,
``OUT/corpora/NAME.log``, ``OUT/eval.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from pet_fairseq.core.arguments import BATCH_SIZE, BEAM, add_language_args, check_positive
from pet_fairseq.core.cli import command
from pet_fairseq.core.plateau import average_checkpoints, interval_checkpoints
from pet_fairseq.study.curves import plot_curves
from pet_fairseq.study.runner import PROGRESS_EVERY, Job, plan_jobs, run_dir, run_jobs, wall_seconds
from pet_fairseq.study.spec import Setup, SpecError, load_spec
from pet_fairseq.study.table import build_rows, curves_of, evaluate, markdown
from pet_fairseq.study.teacher import check_teacher

logger = logging.getLogger("pet_fairseq.study")
USER_DIR = Path(__file__).resolve().parents[1]
#: the evaluation tool's options for the final table. --beam and --batch-size repeat the shared defaults: they are
#: spelt out because the string is part of the key of a study's cached evaluation (study.table.evaluation_key)
EVAL_ARGS = f"--subset test --beam {BEAM} --batch-size {BATCH_SIZE} --repeats 1 --max-sentences 500"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-study", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, required=True, help="the study spec (JSON; see pet_fairseq/study/spec.py)")
    p.add_argument("--data-bin", type=Path, required=True, help="binarized data with train/valid/test")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher checkpoint every variant distils from")
    p.add_argument("--out", type=Path, required=True, help="study folder (cache of corpora, runs and evaluation)")
    add_language_args(p, required=True)
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--tag", default="", help="suffix of the output files (default: the --only names)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: cores / --jobs)")
    p.add_argument("--bpe", choices=("subword_nmt", "sentencepiece", "none"), default="subword_nmt",
                   help="the data's subword scheme, removed before BLEU (none: the data has no BPE)")
    p.add_argument("--bpe-codes", type=Path, default=None, help="subword-nmt codes (for the evaluation tool)")
    p.add_argument("--sentencepiece-model", type=Path, default=None)
    p.add_argument("--eval-args", default=EVAL_ARGS,
                   help="options of the evaluation tool (pet-compare) for the final table; by default the shared "
                        "decoding defaults (beam, batch size, length limit), as users decode (default: %(default)s)")
    p.add_argument("--train-only", action="store_true", help="train, skip the evaluation and the table")
    return p


def check_inputs(args: argparse.Namespace) -> None:
    for path, what in ((args.data_bin, "--data-bin"), (args.teacher, "--teacher")):
        if not path.exists():
            raise SpecError(f"{what} {path} does not exist")
    if args.jobs < 1:
        raise SpecError(f"--jobs must be >= 1, got {args.jobs}")
    check_positive(args, ("threads",), minimum=0)  # 0: cores / --jobs
    if args.bpe == "subword_nmt" and args.bpe_codes is None and not args.train_only:
        raise SpecError("pass --bpe-codes (the data's subword-nmt codes) so the table's BLEU is on de-BPE'd text")


def recorded_walls(jobs: List[Job], variants) -> dict:
    """{variant: (training seconds, corpus + cache seconds)} from the runner's records (None where missing)."""
    by_name = {j.name: j for j in jobs}

    def recorded(job: Job) -> Optional[float]:
        try:
            return wall_seconds(job)
        except SpecError:
            return None

    walls = {}
    for v in variants:
        job = by_name[v.name]
        paid = [recorded(by_name[n]) for n in job.charges]
        walls[v.name] = (recorded(job), None if None in paid or not paid else sum(paid))
    return walls


def run(args: argparse.Namespace) -> int:
    check_inputs(args)
    spec = load_spec(args.spec)
    check_teacher(args.teacher, (args.source_lang, args.target_lang))
    only = [n.strip() for n in args.only.split(",") if n.strip()] or None
    setup = Setup(args.data_bin.resolve(), args.teacher.resolve(), args.source_lang, args.target_lang, USER_DIR,
                  None if args.bpe == "none" else args.bpe)
    out = args.out.resolve()
    bin_dir = Path(sys.executable).parent
    jobs = plan_jobs(spec, setup, out, bin_dir / "fairseq-train", Path(sys.executable), only)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    status = run_jobs(jobs, args.jobs, threads, report_every=PROGRESS_EVERY)
    failed = [name for name, s in status.items() if s in ("failed", "skipped")]
    variants = [v for v in ([spec.variant(n) for n in only] if only else spec.variants) if status.get(v.name) in ("ok", "cached")]
    if args.train_only or not variants:
        return 1 if failed else 0
    bpe = [] if args.bpe == "none" else ["--bpe", args.bpe] + \
        (["--bpe-codes", str(args.bpe_codes)] if args.bpe_codes else []) + \
        (["--sentencepiece-model", str(args.sentencepiece_model)] if args.sentencepiece_model else [])
    dirs = {v.name: run_dir(out, v.name) for v in variants}
    if spec.average_last:
        for d in dirs.values():
            found = interval_checkpoints(d)[-spec.average_last:]
            if not (d / spec.checkpoint_name()).is_file() and len(found) == spec.average_last:
                average_checkpoints(found, d / spec.checkpoint_name())
    tag = f"-{args.tag or '+'.join(only)}" if (args.tag or only) else ""
    report = evaluate(Path(sys.executable), setup.teacher, {n: d / spec.checkpoint_name() for n, d in dirs.items()},
                      setup.data_bin, args.eval_args.split() + bpe, out / f"eval{tag}", out / f"eval{tag}.log")
    logs = {name: (d / "train.log").read_text(encoding="utf-8") for name, d in dirs.items()}
    rows = build_rows(variants, logs, report, recorded_walls(jobs, variants))
    table = markdown(rows, report["models"][0], spec.budget)
    (out / f"study{tag}.md").write_text(table, encoding="utf-8")
    (out / f"study{tag}.json").write_text(json.dumps(
        {"budget": spec.budget, "teacher": report["models"][0].get("bleu"), "status": status,
         "rows": [{**asdict(r), "variant": asdict(r.variant)} for r in rows]}, indent=1) + "\n", encoding="utf-8")
    if plot_curves(curves_of(variants, logs), out / f"curves{tag}.png", f"{spec.budget} updates per student"):
        logger.info("learning curves: %s", out / f"curves{tag}.png")
    print(table)
    if failed:
        print(f"failed or skipped: {', '.join(failed)} (logs under {out})", file=sys.stderr)
    return 1 if failed else 0


@command("study")
def main(argv: Optional[List[str]] = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # lets the runner stop its runs
    return run(build_parser().parse_args(argv))
