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

The PET recipe (:mod:`pet_fairseq.study.recipe`) runs its stages as jobs too, one at a time. What it
needs beyond the study is declared per job: where the command is recorded and in which form (a
``.txt`` record holds one argument per line, as the recipe's earlier bash version wrote them; older
forms of a record can be accepted as the same command), a fairseq-train job that resumes to a larger
``--max-update`` instead of being refused (``resumable``), and how a refusal names the job and the way
out. A refusal names the differing options. ``run_jobs(..., report_every=S)`` logs each running job's
progress every S seconds (updates so far, or the last line of a corpus's log) instead of drawing a bar.

Each job runs in its own process group (fairseq-train's data workers included). An interrupted ``run_jobs`` (Ctrl-C,
or SIGTERM, which it turns into ``SystemExit(143)`` unless the caller handles SIGTERM itself) stops the jobs it started:
SIGTERM to each job's group, :data:`STOP_GRACE` seconds to exit, then SIGKILL to whatever is left; an interrupted job is
not marked finished (a training job resumes from its last checkpoint when run again), and the interruption is re-raised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from tqdm import tqdm

from pet_fairseq.study.spec import Setup, Spec, SpecError, cache_command, seqkd_command, train_command

logger = logging.getLogger("pet_fairseq.study")
#: seconds between the progress lines of a running job (``run_jobs(report_every=...)``)
PROGRESS_EVERY = 60.0
#: seconds an interrupted job's process group gets to exit after SIGTERM before it is killed (SIGKILL)
STOP_GRACE = 10.0


@dataclass
class Job:
    """One subprocess of the study (or a stage of the recipe) and where its output, marker, log and record go."""

    name: str
    argv: List[str]
    output: Path
    marker: Path
    log: Path
    needs: List[str] = field(default_factory=list)
    seconds: Optional[float] = None  # wall-time budget, the ``charges`` included
    charges: List[str] = field(default_factory=list)  # jobs whose wall time a time budget pays (corpus, cache)
    updates_of: Optional[str] = None  # train as many updates as this job made
    # how the command is recorded, and how a finished job asked for another one is met
    record: Optional[Path] = None  # where the command is recorded (default: command_file); .txt: one argument a line
    recorded: Optional[List[str]] = None  # what is recorded and compared (default: argv)
    accepts: List[List[str]] = field(default_factory=list)  # older records of the same command, reused as it
    resumable: bool = False  # fairseq-train asked for a larger --max-update resumes to it instead of being refused
    title: str = ""  # how a refusal names the job (default: its name)
    fix: str = ""  # what a refusal suggests (default: rename the variant or delete its output)
    about: str = ""  # what the job makes, for the line that starts it (default: "started")
    checkpoint: Optional[bool] = None  # it trains (checkpoint_last.pt); default: unless named corpus:... or cache:...
    exit_status: Optional[int] = None  # set when its process ended (2: the tool refused its input)

    @property
    def is_corpus(self) -> bool:
        """A corpus or a cache job (no checkpoint; its own marker)."""
        return not self.checkpoint if self.checkpoint is not None else self.name.startswith(("corpus:", "cache:"))

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
                                [str(python)] + cache_command(setup, data_bin, variant.cache_k, cache, variant.cache_states),
                                cache,
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
    """Where the job's command is recorded."""
    if job.record is not None:
        return job.record
    return job.log.with_name(job.log.stem + ".command.json") if job.is_corpus else job.output / "command.json"


def read_record(path: Path) -> List[str]:
    """A recorded command: a JSON list, or (``.txt``) one argument per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return text[:-1].split("\n") if text.endswith("\n") else (text.split("\n") if text else [])


def write_record(path: Path, args: List[str]) -> None:
    if path.suffix == ".json":
        text = json.dumps(args, indent=1) + "\n"
    else:
        broken = [a for a in args if "\n" in a]
        if broken:
            raise SpecError(f"cannot record an argument with a line break in {path}: {broken[0]!r}")
        text = "".join(a + "\n" for a in args)
    path.write_text(text, encoding="utf-8")


def _same(a: List[str], b: List[str]) -> bool:
    """Equal commands, a path written ``runs/x//teacher`` or ``data/bin/`` being the same as ``runs/x/teacher``."""
    return len(a) == len(b) and all(x == y or ("/" in x and os.path.normpath(x) == os.path.normpath(y)) for x, y in zip(a, b))


_NUMBER = re.compile(r"-\d+(\.\d*)?([eE][-+]?\d+)?")


def option_values(args: List[str]) -> Dict[str, List[Tuple[str, ...]]]:
    """``{option: [values of each occurrence]}`` of a command line; ``""``: the arguments before the first option."""
    found: Dict[str, List[List[str]]] = {"": [[]]}
    current = found[""][0]
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not _NUMBER.fullmatch(arg):
            found.setdefault(arg, []).append([])
            current = found[arg][-1]
        else:
            current.append(os.path.normpath(arg) if "/" in arg else arg)
    return {key: [tuple(v) for v in values] for key, values in found.items() if key or values[0]}


def differing_options(recorded: List[str], wanted: List[str], most: int = 6) -> str:
    """The options whose values differ between two command lines, e.g. ``--dropout 0.3 then 0.2 (was 0.3)``."""
    old, new = option_values(recorded), option_values(wanted)

    def show(key: str, values: List[Tuple[str, ...]]) -> str:
        text = " then ".join(shlex.join(v) for v in values if v)
        return f"{key} {text}".strip()

    found = []
    for key in list(new) + [k for k in old if k not in new]:
        if old.get(key) == new.get(key):
            continue
        if key not in old:
            found.append(f"{show(key, new[key])} (not given before)")
        elif key not in new:
            found.append(f"{show(key, old[key])} (not given now)")
        else:
            found.append(f"{show(key, new[key])} (was {show('', old[key]) or 'given without a value'})")
    if not found:
        return "the same options in another order"
    return "; ".join(found[:most]) + (f"; and {len(found) - most} more" if len(found) > most else "")


def _more_updates(recorded: List[str], wanted: List[str]) -> Optional[Tuple[int, int]]:
    """(recorded, wanted) ``--max-update`` when that is all two commands differ in, else None."""
    if recorded.count("--max-update") != 1 or wanted.count("--max-update") != 1:
        return None
    i, j = recorded.index("--max-update") + 1, wanted.index("--max-update") + 1
    if i >= len(recorded) or j >= len(wanted) or not (recorded[i].isdigit() and wanted[j].isdigit()):
        return None
    if not _same(recorded[:i] + recorded[i + 1:], wanted[:j] + wanted[j + 1:]):
        return None
    return int(recorded[i]), int(wanted[j])


def check_cached(job: Job) -> bool:
    """Whether a finished job is reused: its recorded command is the one asked for now (or one of the older forms it
    ``accepts``), or nothing is recorded. False for a resumable job asked for more updates (it runs again and fairseq
    resumes from its last checkpoint); any other change is refused, naming the differing options."""
    path = command_file(job)
    if not path.is_file():
        return True
    # A recorded argv's program (argv[0]) is where the interpreter or fairseq-train is installed, not what the job
    # runs: a reinstalled environment (python -> python3) keeps its finished runs.
    skip = 1 if job.recorded is None else 0
    recorded = read_record(path)[skip:]
    wanted = (job.argv if job.recorded is None else job.recorded)[skip:]
    forms = [wanted] + [form[skip:] for form in job.accepts]
    if any(_same(recorded, form) for form in forms):
        return True
    if job.resumable:
        for form in forms:
            more = _more_updates(recorded, form)
            if more and more[1] > more[0]:
                logger.info("%s: resuming from %d to %d updates", job.name, *more)
                return False
    fix = job.fix or f"give the changed variant a new name, or delete {job.output} to rerun it"
    raise SpecError(f"{job.title or job.name} was run with other options (differing: {differing_options(recorded, wanted)}); "
                    f"{fix}")


def time_left(job: Job, jobs: Dict[str, Job]) -> Optional[float]:
    """Seconds of training left to a job with a wall-time budget after paying for its corpus and cache."""
    if job.seconds is None:
        return None
    paid = sum(wall_seconds(jobs[name]) for name in job.charges)
    if paid >= job.seconds:
        raise SpecError(f"{job.name}: its corpus and cache took {paid:.0f} s of its {job.seconds:.0f} s budget; "
                        "nothing is left to train: give it a larger 'seconds'")
    return job.seconds - paid


def _start(job: Job, threads: Optional[int], left: Optional[float] = None, updates: Optional[int] = None) -> subprocess.Popen:
    job.output.mkdir(parents=True, exist_ok=True)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    command_file(job).parent.mkdir(parents=True, exist_ok=True)
    write_record(command_file(job), job.recorded if job.recorded is not None else job.argv)
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    argv = job.argv + (["--stop-time-hours", f"{left / 3600:.6f}"] if left is not None else []) + \
        (["--max-update", str(updates)] if updates is not None else [])
    log = open(job.log, "a", encoding="utf-8")
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
    log.flush()
    # its own process group: stopped as a whole (its workers too), and Ctrl-C in a terminal reaches only the runner,
    # which stops it (stdin is not the terminal's, which a background group may not read)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group is gone
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether a process of the job's group is left (the job is reaped first, or it would count as one)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
        return True
    except OSError:
        return False


def stop_jobs(procs: List[Tuple[Job, subprocess.Popen]], grace: Optional[float] = None) -> None:
    """Stop running jobs: SIGTERM to each one's process group, up to ``grace`` seconds (default :data:`STOP_GRACE`) for
    the groups to exit, then SIGKILL to what is left of them (a job past its grace, or a worker of it); a second Ctrl-C
    skips the wait."""
    grace = STOP_GRACE if grace is None else grace
    started = time.monotonic()
    for _, proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = started + grace
    try:
        while time.monotonic() < deadline and any(_group_alive(proc) for _, proc in procs):
            time.sleep(0.1)
    finally:
        for job, proc in procs:
            left = _group_alive(proc)
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            waited = f" (killed what was left of it after {time.monotonic() - started:.0f} s)" if left else ""
            logger.warning("%s: stopped%s%s", job.name, waited,
                           "" if job.is_corpus else "; it resumes from its last checkpoint when run again")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` (so that the running jobs are stopped), unless the caller handles it already."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def exit_143(*_) -> None:
        sys.exit(143)

    signal.signal(signal.SIGTERM, exit_143)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _tail(path: Path, size: int = 65536) -> str:
    """The last ``size`` bytes of a file as text ("" when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def progress_line(job: Job) -> Optional[str]:
    """How far a running job is: ``N / M updates`` of a training job, else the last line of its log (a tqdm bar)."""
    text = _tail(job.log)
    if not job.is_corpus:
        found = re.findall(r"num_updates[= ](\d+)", text)
        if not found:
            return None
        total = [job.argv[i + 1] for i, arg in enumerate(job.argv[:-1]) if arg == "--max-update"]
        return f"{found[-1]}{f' / {total[-1]}' if total else ''} updates"
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip() and not line.startswith("# ")]
    return lines[-1][:160] if lines else None


def run_jobs(jobs: List[Job], parallel: int = 1, threads: Optional[int] = 1,
             report_every: Optional[float] = None) -> Dict[str, str]:
    """Run the unfinished ``jobs``, ``parallel`` at a time; returns ``{name: cached|ok|failed|skipped}``.

    ``threads``: CPU threads of each job (``OMP_NUM_THREADS``; None leaves the environment as it is).
    ``report_every``: seconds between progress lines of each running job, instead of a bar of finished jobs.
    """
    status: Dict[str, str] = {}
    for job in jobs:
        if job.finished():
            if check_cached(job):
                status[job.name] = "cached"
            else:  # resumed: unfinished until it ends again
                job.marker.unlink()
    pending = [j for j in jobs if j.name not in status]
    running: Dict[str, tuple] = {}
    with _sigterm_raises():
        try:
            _schedule(pending, running, status, parallel, threads, {j.name: j for j in jobs}, report_every)
        finally:  # interrupted (Ctrl-C, SIGTERM): stop the runs this call started; none is marked finished
            if running:
                stop_jobs([(job, proc) for job, proc, _ in running.values()])
    return status


def _schedule(pending: List[Job], running: Dict[str, tuple], status: Dict[str, str], parallel: int,
              threads: Optional[int], by_name: Dict[str, Job], report_every: Optional[float] = None) -> None:
    reported = time.time()
    with tqdm(total=len(pending), unit="run", desc="study", file=sys.stderr, disable=report_every is not None) as progress:
        while pending or running:
            if report_every is not None and time.time() - reported >= report_every:
                reported = time.time()
                for job, proc, _ in running.values():
                    line = progress_line(job)
                    if line and proc.poll() is None:
                        logger.info("%s: %s", job.name, line)
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
                    logger.info("%s: %s%s (%s: %s)", job.name, job.about or "started",
                                f", {left:.0f} s of training left of its {job.seconds:.0f} s budget" if left else "",
                                "log" if job.is_corpus else "fairseq log", job.log)
            time.sleep(0.5)
            for name, (job, proc, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                job.exit_status = proc.returncode
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
