"""Launching subprocesses (a decoding process per model, a CTranslate2 conversion), collecting their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from pet_fairseq.evaluation.errors import EvaluationError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that contains pet_fairseq/


def worker_env(threads: int) -> dict[str, str]:
    """Environment for a child process: ``pet_fairseq`` importable, the thread count pinned."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _echo(chunk: bytes) -> None:
    sys.stderr.flush()  # keep order with text already written
    out = getattr(sys.stderr, "buffer", None)
    if out is not None:
        out.write(chunk)
    else:  # a text-only stderr (e.g. replaced by a test harness)
        sys.stderr.write(chunk.decode("utf-8", "replace"))
    sys.stderr.flush()


def _stream(stream, tail: deque) -> None:
    """Copy the child's stderr to ours as it comes (tqdm progress included), keeping the last lines."""
    pending = b""
    while chunk := stream.read1(4096):
        _echo(chunk)
        pending += chunk
        *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
        tail.extend(line.decode("utf-8", "replace") for line in lines if line.strip())
    if pending.strip():
        tail.append(pending.decode("utf-8", "replace"))


def run_streaming(command: list[str], threads: int) -> tuple[int, list[str]]:
    """Run ``command`` in :func:`worker_env`, copying its stderr to ours as it comes.

    Returns its exit code and the last 20 non-empty lines of its stderr.
    """
    tail: deque = deque(maxlen=20)
    with subprocess.Popen(command, stderr=subprocess.PIPE, env=worker_env(threads)) as process:
        _stream(process.stderr, tail)
        returncode = process.wait()
    return returncode, list(tail)


def run_decoder(job: dict, job_path: Path, command: list[str] | None = None) -> dict:
    """Run ``pet_fairseq.evaluation.decode`` on ``job``; return its result, or raise with the reason.

    ``command`` replaces the decoding program (the job file's path is appended), e.g. the torch-free
    CTranslate2 worker of :mod:`pet_fairseq.evaluation.ct2_worker`; it must write the same result JSON.
    """
    job_path.write_text(json.dumps(job, indent=2))
    result_path = Path(job["result_path"])
    result_path.unlink(missing_ok=True)
    command = [*(command or [sys.executable, "-m", "pet_fairseq.evaluation.decode", "--job"]), str(job_path)]
    returncode, tail = run_streaming(command, job["threads"])
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("status") == "ok":
            return result
        raise EvaluationError(result.get("error", "decoding failed"))
    last = tail[-1] if tail else "no output"
    raise EvaluationError(f"decoding process exited with code {returncode} without a result ({last})")
