"""Running a study's corpora and variants, ``jobs`` at a time, with a cache of finished runs.

Each job is one subprocess (``python -m pet_fairseq.seqkd`` or ``fairseq-train``) with its own log
file. A job is finished when its marker exists (``seqkd.json`` in the corpus, ``.done`` in the
run folder); a finished job is skipped. The command line of every job is recorded next to its
output, and a cached job whose recorded command differs from the spec's is an error, so an edited
variant is never silently reused. With ``jobs`` > 1 each job gets ``threads`` CPU threads
(``OMP_NUM_THREADS``); a variant waits for its corpus and its teacher cache.

Every finished job records its wall time (``.done`` of a run, ``NAME.wall.json`` next to the log of a
corpus or a cache). A variant with a wall-time budget pays for its corpus and cache: when it starts,
its training gets ``--stop-time-hours`` for what is left of the budget.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tqdm import tqdm

from pet_fairseq.study.spec import Setup, Spec, SpecError, cache_command, seqkd_command, train_command

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
    seconds: Optional[float] = None  # wall-time budget, the ``charges`` included
    charges: List[str] = field(default_factory=list)  # jobs whose wall time a time budget pays (corpus, cache)
    updates_of: Optional[str] = None  # train as many updates as this job made

    @property
    def is_corpus(self) -> bool:
        """A corpus or a cache job (no checkpoint; its own marker)."""
        return self.name.startswith(("corpus:", "cache:"))

    @property
    def wall_file(self) -> Path:
        """Where the job's wall time is recorded once it finished."""
        return self.log.with_name(self.log.stem + ".wall.json") if self.is_corpus else self.marker

    def finished(self) -> bool:
        return self.marker.is_file()


def corpus_dir(out: Path, name: str) -> Path:
    return out / "corpora" / name


def run_dir(out: Path, name: str) -> Path:
    return out / "runs" / name


def cache_dir(out: Path, name: str) -> Path:
    return out / "caches" / name


def wall_seconds(job: Job) -> float:
    """The recorded wall time of a finished job."""
    if not job.wall_file.is_file():
        raise SpecError(f"{job.name} finished but its wall time is not recorded ({job.wall_file}); a variant with a "
                        f"time budget cannot be charged for it: delete {job.output} to rerun it")
    return float(json.loads(job.wall_file.read_text(encoding="utf-8"))["wall_seconds"])


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
        needs = [f"corpus:{variant.corpus}"] if variant.corpus else []
        cache = cache_dir(out, variant.cache_name) if variant.cache_name else None
        if cache is not None:
            if f"cache:{variant.cache_name}" not in {j.name for j in jobs}:
                jobs.append(Job(f"cache:{variant.cache_name}",
                                [str(python)] + cache_command(setup, data_bin, variant.cache_k, cache), cache,
                                cache / "cache.json", out / "caches" / f"{variant.cache_name}.log", list(needs)))
            needs.append(f"cache:{variant.cache_name}")
        charges = list(needs)
        if variant.updates_of:
            needs.append(variant.updates_of)
        jobs.append(Job(variant.name, [str(fairseq_train)] + train_command(spec, variant, setup, data_bin, path, cache),
                        path, path / ".done", path / "train.log", needs, variant.seconds, charges, variant.updates_of))
    planned = {job.name for job in jobs}
    missing = sorted({j.updates_of for j in jobs if j.updates_of and j.updates_of not in planned})
    if missing:
        raise SpecError(f"updates_of names variant(s) {', '.join(missing)} that this call does not plan: add them to --only")
    return jobs


def last_update(log: Path) -> int:
    """The last ``num_updates`` a fairseq-train log reports."""
    found = re.findall(r"num_updates[= ](\d+)", log.read_text(encoding="utf-8")) if log.is_file() else []
    if not found:
        raise SpecError(f"{log} reports no num_updates")
    return int(found[-1])


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


def time_left(job: Job, jobs: Dict[str, Job]) -> Optional[float]:
    """Seconds of training left to a job with a wall-time budget after paying for its corpus and cache."""
    if job.seconds is None:
        return None
    paid = sum(wall_seconds(jobs[name]) for name in job.charges)
    if paid >= job.seconds:
        raise SpecError(f"{job.name}: its corpus and cache took {paid:.0f} s of its {job.seconds:.0f} s budget; "
                        "nothing is left to train: give it a larger 'seconds'")
    return job.seconds - paid


def _start(job: Job, threads: int, left: Optional[float] = None, updates: Optional[int] = None) -> subprocess.Popen:
    job.output.mkdir(parents=True, exist_ok=True)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    command_file(job).write_text(json.dumps(job.argv, indent=1) + "\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = job.argv + (["--stop-time-hours", f"{left / 3600:.6f}"] if left is not None else []) + \
        (["--max-update", str(updates)] if updates is not None else [])
    log = open(job.log, "a", encoding="utf-8")
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
    log.flush()
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


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
        _schedule(pending, running, status, parallel, threads, {j.name: j for j in jobs})
    finally:  # interrupted (Ctrl-C, SIGTERM): stop the runs this call started; they resume from their checkpoints
        for job, proc, _ in running.values():
            proc.terminate()
            logger.warning("%s: stopped", job.name)
    return status


def _schedule(pending: List[Job], running: Dict[str, tuple], status: Dict[str, str], parallel: int, threads: int,
              by_name: Dict[str, Job]) -> None:
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
                    try:
                        left = time_left(job, by_name)
                        updates = last_update(by_name[job.updates_of].log) if job.updates_of else None
                    except SpecError as err:
                        status[job.name] = "failed"
                        progress.update(1)
                        logger.error("%s: not started: %s", job.name, err)
                        continue
                    running[job.name] = (job, _start(job, threads, left, updates), time.time())
                    logger.info("%s: started%s (log: %s)", job.name,
                                f", {left:.0f} s of training left of its {job.seconds:.0f} s budget" if left else "", job.log)
            time.sleep(0.5)
            for name, (job, proc, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                progress.update(1)
                seconds = time.time() - started
                if proc.returncode == 0 and (job.is_corpus or (job.output / "checkpoint_last.pt").is_file()):
                    record = {"wall_seconds": round(seconds, 1), "threads": threads, "parallel_jobs": parallel}
                    if job.seconds is not None:
                        record.update(budget_seconds=job.seconds, paid_seconds=round(
                            sum(wall_seconds(by_name[n]) for n in job.charges), 1))
                    if not job.is_corpus and re.search(r"num_updates[= ]\d", job.log.read_text(encoding="utf-8")):
                        record["updates"] = last_update(job.log)
                    job.wall_file.write_text(json.dumps(record) + "\n", encoding="utf-8")
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
