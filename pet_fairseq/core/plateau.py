"""Validation curves of fairseq-train runs, where they plateaued, and checkpoint averaging.

* :func:`valid_points` reads every ``valid on 'valid' subset`` line of a ``--log-format simple`` log
  (updates, valid NLL, greedy valid BLEU and the run's wall time at that validation, from fairseq's
  timestamps; when a run was resumed, a ``# DATE COMMAND`` header line starts each call and the
  pause between calls is not counted).
* :func:`patience_stop` is fairseq's ``--patience`` rule (``fairseq_cli.train.should_stop_early``)
  applied to a finished curve: the validation at which a run with that patience stops.
* :func:`plateau` says whether a curve has flattened: the best value of its last ``fraction`` of
  updates improves on the best before them by less than ``min_gain``.
* :func:`average_checkpoints` averages the model weights of several checkpoints of one run
  (what fairseq's ``scripts/average_checkpoints.py`` does; that script is not in the fairseq wheel).

``python -m pet_fairseq.core.plateau report LOG`` prints and records where a run stopped;
``python -m pet_fairseq.core.plateau average SAVE_DIR --last N --out CKPT`` averages its last N
interval checkpoints.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pet_fairseq.core.cli import command
from pet_fairseq.core.errors import ConfigError, MissingFileError
from pet_fairseq.core.files import write_json_atomic

_VALID = re.compile(r"\| valid on 'valid' subset \|(.*)$")
_FIELD = re.compile(r"\|?\s*(\w+) ([-+0-9.eE]+|inf|nan)\s*(?=\||$)")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|")
_INTERVAL_CHECKPOINT = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")


@dataclass(frozen=True)
class CurvePoint:
    updates: int
    nll_bits: float  # fairseq's nll_loss: base 2, per target token, on the references
    bleu: Optional[float]  # --eval-bleu (greedy) on the valid split
    seconds: Optional[float] = None  # wall time of the run at this validation
    loss: Optional[float] = None  # the criterion's valid loss

    def metric(self, name: str) -> Optional[float]:
        return {"bleu": self.bleu, "loss": self.loss, "nll_loss": self.nll_bits}[name]


def valid_points(log: str) -> List[CurvePoint]:
    """Every validation of a log, in order (a resumed log may repeat an update count: the last wins)."""
    points: Dict[int, CurvePoint] = {}
    before, start, last = 0.0, None, None  # seconds of earlier calls; first and last stamp of this call
    for line in log.splitlines():
        if line.startswith("# ") and start is not None:
            before, start = before + (last - start).total_seconds(), None
            continue
        stamp = _STAMP.match(line)
        if stamp is not None:
            last = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
            start = start or last
        m = _VALID.search(line)
        if m is None:
            continue
        values = {k: float(v) for k, v in _FIELD.findall(m.group(1))}
        if "num_updates" in values and "nll_loss" in values:
            seconds = before + (last - start).total_seconds() if stamp is not None else None
            points[int(values["num_updates"])] = CurvePoint(int(values["num_updates"]), values["nll_loss"],
                                                            values.get("bleu"), seconds, values.get("loss"))
    return [points[k] for k in sorted(points)]


def patience_stop(values: Sequence[float], patience: int, maximize: bool) -> Optional[int]:
    """Index of the validation after which fairseq's ``--patience`` stops the run, or None (it runs on).

    A validation that is not strictly better than the best so far counts one run; ``patience`` runs in a
    row stop training (fairseq_cli.train.should_stop_early).
    """
    if patience <= 0:
        return None
    best, runs = None, 0
    for i, value in enumerate(values):
        if best is None or (value > best if maximize else value < best):
            best, runs = value, 0
        else:
            runs += 1
            if runs >= patience:
                return i
    return None


def plateau(points: Sequence[CurvePoint], metric: str = "bleu", fraction: float = 0.2,
            min_gain: float = 0.3) -> Dict[str, object]:
    """Whether the last ``fraction`` of a curve's updates improved its best ``metric`` by less than ``min_gain``.

    Returns ``{"plateaued": bool | None, "gain": float | None, "window_start": updates}``; None when the
    curve has no validation before the window (too short to tell). For ``loss``/``nll_loss`` the gain is
    the decrease.
    """
    values = [(p.updates, p.metric(metric)) for p in points if p.metric(metric) is not None]
    if not values:
        return {"plateaued": None, "gain": None, "window_start": None}
    window_start = values[-1][0] * (1 - fraction)
    before = [v for u, v in values if u <= window_start]
    inside = [v for u, v in values if u > window_start]
    if not before or not inside:
        return {"plateaued": None, "gain": None, "window_start": window_start}
    gain = max(inside) - max(before) if metric == "bleu" else min(before) - min(inside)
    return {"plateaued": gain < min_gain, "gain": round(gain, 4), "window_start": round(window_start)}


def stop_report(log: str, metric: str = "bleu") -> Dict[str, object]:
    """Where a run stopped and where its best validation was, from its log."""
    points = valid_points(log)
    if not points:
        raise ConfigError("the log holds no validation line ('valid on 'valid' subset')")
    scored = [p for p in points if p.metric(metric) is not None]
    if not scored:
        raise ConfigError(f"the log's validations carry no {metric} (train with --eval-bleu, or use --metric loss)")
    best = max(scored, key=lambda p: p.metric(metric)) if metric == "bleu" else min(scored, key=lambda p: p.metric(metric))
    return {"metric": metric, "stopped_at_update": points[-1].updates, "wall_seconds": points[-1].seconds,
            "best_update": best.updates, "best_value": best.metric(metric), "best_wall_seconds": best.seconds,
            "early_stop": "early stop since valid performance hasn't improved" in log,
            "validations": [asdict(p) for p in points], **plateau(points, metric)}


def summary_line(report: Dict[str, object]) -> str:
    """One line saying where a run stopped, why, and where its best validation was (of :func:`stop_report`)."""
    metric = report["metric"]
    how_it_stopped = (f"early stop: no better valid {metric} within its patience" if report["early_stop"]
                      else "no early stop: its budget ended it, or it was stopped")
    seconds = report["wall_seconds"]
    verdict = {True: "plateaued", False: "still improving", None: "too short to tell"}[report["plateaued"]]
    return (f"stopped at update {report['stopped_at_update']}"
            f"{f' after {seconds:.0f} s' if seconds is not None else ''}"
            f" ({how_it_stopped}); "
            f"best valid {metric} {report['best_value']:.2f} at update {report['best_update']}; {verdict} "
            f"(gain {report['gain']} over the last 20 % of updates)")


def interval_checkpoints(save_dir: Path) -> List[Path]:
    """``checkpoint_EPOCH_UPDATES.pt`` files of ``save_dir`` by update count."""
    found = [(int(m.group(1)), p) for p in save_dir.iterdir() if (m := _INTERVAL_CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def average_checkpoints(paths: Sequence[Path], out: Path) -> Path:
    """Write ``out``: the first checkpoint with its model weights replaced by the mean over ``paths``."""
    import torch
    from fairseq import checkpoint_utils

    if not paths:
        raise ConfigError("no checkpoint to average")
    states = [checkpoint_utils.load_checkpoint_to_cpu(str(p)) for p in paths]
    keys = list(states[0]["model"])
    for path, state in zip(paths[1:], states[1:]):
        if list(state["model"]) != keys:
            raise ConfigError(f"{path} holds other parameters than {paths[0]}: average checkpoints of one run")
    averaged = collections.OrderedDict()
    for key in keys:
        tensors = [s["model"][key] for s in states]
        mean = torch.stack([t.double() for t in tensors]).mean(dim=0)
        averaged[key] = mean.to(tensors[0].dtype) if tensors[0].is_floating_point() else tensors[-1]
    result = states[0]
    result["model"] = averaged
    result.setdefault("extra_state", {})["averaged_from"] = [str(p) for p in paths]
    tmp = out.with_name(out.name + ".tmp")
    checkpoint_utils.torch_persistent_save(result, str(tmp))
    tmp.replace(out)
    return out


def average_last(save_dir: Path, last: int, out: Path) -> List[Path]:
    """Average the last ``last`` interval checkpoints of ``save_dir`` into ``out``; returns the files averaged."""
    if last < 2:
        raise ConfigError(f"--last {last}: an average needs at least 2 checkpoints; pass --last 2 or more")
    if not save_dir.is_dir():
        raise MissingFileError(f"{save_dir} is not a folder: pass the run's --save-dir")
    found = interval_checkpoints(save_dir)
    if len(found) < last:
        raise ConfigError(f"--last {last}: {save_dir} holds {len(found)} interval checkpoints "
                          "(checkpoint_E_U.pt); train with --save-interval-updates and --keep-interval-updates N")
    if out.exists() and any(os.path.samefile(out, p) for p in found[-last:]):
        raise ConfigError(f"--out {out} is {out.name}, one of the checkpoints being averaged; choose another --out "
                          f"(e.g. {save_dir / f'checkpoint_avg{last}.pt'})")
    if out.absolute().parent.resolve() == save_dir.resolve() and _INTERVAL_CHECKPOINT.match(out.name):
        raise ConfigError(f"--out {out} is named like an interval checkpoint (checkpoint_E_U.pt) in {save_dir}, so a "
                          f"later average would take it for one; choose another --out (e.g. "
                          f"{save_dir / f'checkpoint_avg{last}.pt'})")
    average_checkpoints(found[-last:], out)
    return found[-last:]


@command("plateau")
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pet-plateau", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="where a run stopped, its best validation and whether it plateaued")
    rep.add_argument("log", type=Path)
    rep.add_argument("--metric", choices=("bleu", "loss", "nll_loss"), default="bleu")
    rep.add_argument("--json", type=Path, default=None, help="also write the report here")
    avg = sub.add_parser("average", help="average the last N interval checkpoints of a save dir")
    avg.add_argument("save_dir", type=Path)
    avg.add_argument("--last", type=int, required=True)
    avg.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "average":
        found = average_last(args.save_dir, args.last, args.out)
        print(f"averaged {', '.join(p.name for p in found)} -> {args.out}", file=sys.stderr)
        return 0
    if not args.log.is_file():
        raise MissingFileError(f"{args.log} does not exist: pass the run's fairseq log (train.log)")
    report = stop_report(args.log.read_text(encoding="utf-8", errors="replace"), args.metric)
    if args.json:
        write_json_atomic(args.json, report)
    print(summary_line(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
