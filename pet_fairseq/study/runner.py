"""Running a study's corpora and variants, ``jobs`` at a time, with a cache of finished runs.

Each job is one subprocess (``python -m pet_fairseq.seqkd`` or ``fairseq-train``) with its own log
file. A job is finished when its marker exists (``seqkd.json`` in the corpus, ``.done`` in the
run folder); a finished job is skipped. The command line of every job is recorded next to its
output, and a cached job whose recorded command differs from the spec's is an error, so an edited
variant is never silently reused. With ``jobs`` > 1 each job gets ``threads`` CPU threads
(``OMP_NUM_THREADS``); a variant waits for its corpus.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tqdm import tqdm

from pet_fairseq.study.spec import Setup, Spec, SpecError, seqkd_command, train_command

logger = logging.getLogger("pet_fairseq.study")


@dataclass
class Job:
    """One subprocess of the study and where its output, marker and log go."""

    name: str
    argv: List[str]
    output: Path
    marker: Path
    log: Path
    needs: List[str] = field(default_factory=list)

    @property
    def is_corpus(self) -> bool:
        return self.name.startswith("corpus:")

    def finished(self) -> bool:
        return self.marker.is_file()


def corpus_dir(out: Path, name: str) -> Path:
    return out / "corpora" / name


def run_dir(out: Path, name: str) -> Path:
    return out / "runs" / name


def plan_jobs(spec: Spec, setup: Setup, out: Path, fairseq_train: Path, python: Path,
              only: Optional[List[str]] = None) -> List[Job]:
    """The variant jobs in spec order, each corpus job placed just before the first variant that needs it."""
    variants = [spec.variant(name) for name in only] if only else spec.variants
    jobs: List[Job] = []
    for variant in variants:
        if variant.corpus and f"corpus:{variant.corpus}" not in {j.name for j in jobs}:
            path = corpus_dir(out, variant.corpus)
            jobs.append(Job(f"corpus:{variant.corpus}", [str(python)] + seqkd_command(spec.corpora[variant.corpus], setup, path),
                            path, path / "seqkd.json", out / "corpora" / f"{variant.corpus}.log"))
        path = run_dir(out, variant.name)
        data_bin = corpus_dir(out, variant.corpus) if variant.corpus else setup.data_bin
        jobs.append(Job(variant.name, [str(fairseq_train)] + train_command(spec, variant, setup, data_bin, path), path,
                        path / ".done", path / "train.log", [f"corpus:{variant.corpus}"] if variant.corpus else []))
    return jobs


def command_file(job: Job) -> Path:
    return job.log.with_name(job.log.stem + ".command.json") if job.is_corpus else job.output / "command.json"


def check_cached(job: Job) -> None:
    """Refuse a finished job whose recorded command is not the one the spec asks for now."""
    path = command_file(job)
    if not path.is_file():
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded != job.argv:
        changed = sorted(set(job.argv) ^ set(recorded))[:6]
        raise SpecError(f"{job.name} was run with another command (differing arguments: {' '.join(changed)}); "
                        f"give the changed variant a new name, or delete {job.output} to rerun it")


def _start(job: Job, threads: int) -> subprocess.Popen:
    job.output.mkdir(parents=True, exist_ok=True)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    command_file(job).write_text(json.dumps(job.argv, indent=1) + "\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = open(job.log, "a", encoding="utf-8")
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(job.argv)}\n")
    log.flush()
    return subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_jobs(jobs: List[Job], parallel: int = 1, threads: int = 1) -> Dict[str, str]:
    """Run the unfinished ``jobs``, ``parallel`` at a time; returns ``{name: cached|ok|failed|skipped}``."""
    status: Dict[str, str] = {}
    for job in jobs:
        if job.finished():
            check_cached(job)
            status[job.name] = "cached"
    pending = [j for j in jobs if j.name not in status]
    running: Dict[str, tuple] = {}
    try:
        _schedule(pending, running, status, parallel, threads)
    finally:  # interrupted (Ctrl-C, SIGTERM): stop the runs this call started; they resume from their checkpoints
        for job, proc, _ in running.values():
            proc.terminate()
            logger.warning("%s: stopped", job.name)
    return status


def _schedule(pending: List[Job], running: Dict[str, tuple], status: Dict[str, str], parallel: int, threads: int) -> None:
    with tqdm(total=len(pending), unit="run", desc="study", file=sys.stderr) as progress:
        while pending or running:
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if any(status.get(dep) in ("failed", "skipped") for dep in job.needs):
                    status[job.name] = "skipped"
                    pending.remove(job)
                    progress.update(1)
                    logger.warning("%s: skipped, because %s failed", job.name, ", ".join(job.needs))
                elif all(status.get(dep) in ("cached", "ok") for dep in job.needs):
                    pending.remove(job)
                    running[job.name] = (job, _start(job, threads), time.time())
                    logger.info("%s: started (log: %s)", job.name, job.log)
            time.sleep(0.5)
            for name, (job, proc, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                progress.update(1)
                seconds = time.time() - started
                if proc.returncode == 0 and (job.is_corpus or (job.output / "checkpoint_last.pt").is_file()):
                    if not job.is_corpus:
                        job.marker.write_text(json.dumps({"wall_seconds": round(seconds, 1)}) + "\n", encoding="utf-8")
                    status[name] = "ok"
                    logger.info("%s: finished in %.0f s", name, seconds)
                else:
                    status[name] = "failed"
                    logger.error("%s: failed (exit %s) after %.0f s; see %s", name, proc.returncode, seconds, job.log)
            if pending and not running and not any(
                    all(status.get(dep) in ("cached", "ok") for dep in j.needs) for j in pending):
                for job in pending:  # dependencies that are neither planned nor finished
                    status[job.name] = "skipped"
                pending.clear()
