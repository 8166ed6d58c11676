"""The time of one training update with and without the teacher, measured side by side.

    python -m pet_fairseq.study.update_cost --spec configs/study/multi30k.json --student pet \\
        --data-bin DATA_BIN --teacher TEACHER.pt --cache CACHE [--updates 30] [--rounds 2] [--threads 2]

Runs real ``fairseq-train`` processes on the same data, student and optimiser (the spec's student
and common arguments), one mode after the other and ``--rounds`` times over, interleaved:

* ``ce``: label-smoothed cross-entropy, no teacher;
* ``online-kd``: ``pet_kd`` with the teacher run in every update (the spec's recipe options, ``--kd-args``);
* ``online-kd-no-inter``: the same without the intermediate-layer loss;
* ``cached-kd``: ``pet_kd --teacher-cache CACHE`` (no teacher forward, no intermediate loss);
* ``cached-kd-inter``: the same with the intermediate loss, whose teacher states the cache holds
  (``--cache`` built with ``--encoder-states``/``--decoder-states``).

Seconds per update are fairseq's ``train_wall`` over the logging windows after the first (which
holds start-up and the first batches), and the table gives each mode's median over rounds and its
ratio to ``ce``. Every mode runs with the same ``--threads`` (default 0: one per core); run it on an otherwise idle machine,
or read only the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from pet_fairseq.core.arguments import add_device_args, add_language_args, resolve_threads
from pet_fairseq.core.cli import command
from pet_fairseq.core.files import infer_pair
from pet_fairseq.study.spec import SpecError, load_spec

MODES = ("ce", "online-kd", "online-kd-no-inter", "cached-kd", "cached-kd-inter")
DEFAULT_MODES = MODES[:4]  # cached-kd-inter needs a cache with hidden states
NO_INTER = ["--inter-beta", "0", "--encoder-layer-map", "", "--decoder-layer-map", ""]


def seconds_per_update(log: str) -> float:
    """``train_wall`` per update over the ``train_inner`` windows of a json log, the first window left out."""
    windows = [json.loads(line.split("| train_inner | ", 1)[1]) for line in log.splitlines() if "| train_inner | " in line]
    if len(windows) < 2:
        raise ValueError("fewer than two train_inner windows in the log: raise --updates or lower --log-interval")
    updates = [int(w["num_updates"]) for w in windows]
    walls = [float(w["train_wall"]) for w in windows]
    return sum(walls[1:]) / (updates[-1] - updates[0])


def mode_args(mode: str, teacher: Path, cache: Optional[Path], kd_args: List[str]) -> List[str]:
    if mode == "ce":
        return ["--task", "translation", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
    kd = ["--task", "pet_distillation", "--teacher-path", str(teacher), "--criterion", "pet_kd", *kd_args]
    if mode == "online-kd":
        return kd
    if mode == "online-kd-no-inter":
        return kd + NO_INTER
    if mode == "cached-kd-inter":
        return kd + ["--teacher-cache", str(cache)]
    return kd + NO_INTER + ["--teacher-cache", str(cache)]


def time_mode(argv: List[str], threads: int, log: Path) -> float:
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env_threads})
    text = log.read_text(encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-train failed (exit {proc.returncode}); see {log}:\n{text[-1500:]}")
    return seconds_per_update(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-update-cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, required=True, help="study spec whose student and common arguments are used")
    p.add_argument("--student", default="pet", help="the spec's student to time")
    p.add_argument("--data-bin", type=Path, required=True, help="the data the cache was made on")
    add_language_args(p)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="teacher cache of --data-bin (python -m pet_fairseq.kdcache)")
    p.add_argument("--kd-args", default="--kd-alpha 0.5 --kd-temperature 1",
                   help="pet_kd options of the KD modes (the intermediate loss is pet_kd's default, β 2, auto maps)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, from {', '.join(MODES)} "
                                                                     "(default: %(default)s)")
    p.add_argument("--updates", type=int, default=30, help="updates per timed run")
    p.add_argument("--log-interval", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="every mode is run this many times, interleaved")
    add_device_args(p, device=False, parallel_batches=False)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--work-dir", type=Path, default=None, help="logs of the timed runs (default: a temporary folder)")
    return p


def run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise SpecError(f"--modes: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODES)}")
    if {"cached-kd", "cached-kd-inter"} & set(modes) and (args.cache is None or not (args.cache / "cache.json").is_file()):
        raise SpecError("--cache must be a finished teacher cache of --data-bin for the cached-kd mode "
                        "(python -m pet_fairseq.kdcache DATA_BIN --teacher TEACHER.pt --out CACHE)")
    if args.updates < 2 * args.log_interval or args.rounds < 1:
        raise SpecError("need --updates >= 2 x --log-interval and --rounds >= 1")
    args.threads = resolve_threads(args.threads)
    spec = load_spec(args.spec)
    if args.student not in spec.students:
        raise SpecError(f"--student {args.student!r} is not in {args.spec} ({', '.join(spec.students)})")
    if not (args.source_lang and args.target_lang):
        args.source_lang, args.target_lang = infer_pair(args.data_bin, "train")
    train = Path(sys.executable).parent / "fairseq-train"
    user_dir = Path(__file__).resolve().parents[1]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="update-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    times: Dict[str, List[float]] = {m: [] for m in modes}
    for round_ in range(args.rounds):
        for mode in modes:
            save = work / f"{mode}-{round_}"
            argv = [str(train), str(args.data_bin), "--user-dir", str(user_dir), "--source-lang", args.source_lang,
                    "--target-lang", args.target_lang, *shlex.split(spec.students[args.student]),
                    *shlex.split(spec.common_args), *mode_args(mode, args.teacher, args.cache, shlex.split(args.kd_args)),
                    "--max-update", str(args.updates), "--seed", "1", "--cpu", "--no-save", "--save-dir", str(save),
                    "--log-format", "json", "--log-interval", str(args.log_interval), "--disable-validation"]
            times[mode].append(time_mode(argv, args.threads, work / f"{mode}-{round_}.log"))
            print(f"[update cost] round {round_ + 1}/{args.rounds} {mode}: {times[mode][-1]:.3f} s/update",
                  file=sys.stderr, flush=True)
    median = {m: statistics.median(v) for m, v in times.items()}
    ref = median.get("ce") or median[modes[0]]
    print(f"| mode | s/update (median of {args.rounds}) | × {'ce' if 'ce' in median else modes[0]} | runs |")
    print("|---|---|---|---|")
    for m in modes:
        print(f"| {m} | {median[m]:.3f} | {median[m] / ref:.2f} | {', '.join(f'{t:.3f}' for t in times[m])} |")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"threads": args.threads, "updates": args.updates, "rounds": args.rounds,
                                   "student": args.student, "seconds_per_update": times, "median": median,
                                   "ratio_to_ce": {m: median[m] / ref for m in modes}}, indent=1) + "\n",
                       encoding="utf-8")
        tmp.replace(args.json)
    return 0


@command("update-cost")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except RuntimeError as err:  # a training run that failed: its log says why
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
