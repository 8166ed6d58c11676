"""The study's table: BLEU, memory and speed from the evaluation tool, NLL and step time from the logs.

All finished variants and the teacher are decoded in **one** run of the evaluation tool
(:mod:`pet_fairseq.evaluation.compare`), so decode-speed ratios are measured side by side; that
run is cached under ``eval/`` and redone only when the set of checkpoints changes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pet_fairseq.core.plateau import plateau
from pet_fairseq.core.training_cost import training_cost
from pet_fairseq.study.curves import CurvePoint, valid_points
from pet_fairseq.study.spec import Variant


@dataclass(frozen=True)
class Row:
    variant: Variant
    bleu: Optional[float]
    valid_nll: Optional[float]
    unique_parameters: Optional[int]
    seconds_per_update: Optional[float]
    speed_ratio: Optional[float]
    updates: Optional[int] = None  # updates at the last validation
    train_seconds: Optional[float] = None  # wall time of the training run
    paid_seconds: Optional[float] = None  # wall time of its corpus and teacher cache (None: none, or not recorded)
    runaway: Optional[int] = None  # test hypotheses at the length limit or over twice their source
    plateau_gain: Optional[float] = None  # best valid BLEU of the last 20 % of updates minus the best before

    @property
    def total_seconds(self) -> Optional[float]:
        return None if self.train_seconds is None else self.train_seconds + (self.paid_seconds or 0.0)


def evaluation_key(models: Sequence[Path], eval_args: Sequence[str]) -> Dict[str, object]:
    """What the cached evaluation depends on: the checkpoints (path, size, mtime) and the options."""
    return {"models": [[str(m), m.stat().st_size, int(m.stat().st_mtime)] for m in models], "args": list(eval_args)}


def evaluate(python: Path, teacher: Path, runs: Dict[str, Path], data_bin: Path, eval_args: List[str],
             out: Path, log: Path) -> dict:
    """The evaluation tool's report for the teacher + ``runs`` ({label: checkpoint}), cached in ``out``."""
    models = [teacher] + list(runs.values())
    key = evaluation_key(models, eval_args)
    key_file, report = out / "key.json", out / "report.json"
    if report.is_file() and key_file.is_file() and json.loads(key_file.read_text(encoding="utf-8")) == key:
        return json.loads(report.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    labels = ",".join(["teacher"] + [label.replace(",", ";") for label in runs])
    argv = [str(python), "-m", "pet_fairseq.evaluation.compare", "--data-bin", str(data_bin), "--labels", labels,
            "--out-dir", str(out)] + eval_args + [str(m) for m in models]
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT)
    if not report.is_file():
        raise RuntimeError(f"the evaluation tool failed (exit {proc.returncode}); see {log}")
    key_file.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return json.loads(report.read_text(encoding="utf-8"))


def build_rows(variants: List[Variant], logs: Dict[str, str], report: dict,
               walls: Optional[Dict[str, tuple]] = None) -> List[Row]:
    """One row per variant from the evaluation report and its training log (``logs``: {name: text}).

    ``walls``: {name: (training seconds, corpus + cache seconds)} as the runner recorded them.
    """
    by_label = {m["label"]: m for m in report["models"]}
    rows = []
    for v in variants:
        model = by_label.get(v.name, {})
        ok = model.get("status") == "ok"
        log = logs[v.name]
        points = valid_points(log)
        try:
            step = training_cost(log).seconds_per_update
        except ValueError:
            step = None
        rows.append(Row(
            v, model["bleu"]["detok"] if ok else None, points[-1].nll_bits if points else None,
            model["memory"]["unique_parameters"] if ok else None, step,
            (model.get("ratios") or {}).get("tokens_per_second") if ok else None,
            points[-1].updates if points else None, *((walls or {}).get(v.name) or (None, None)),
            model.get("runaway") if ok else None, plateau(points, "bleu")["gain"],
        ))
    return rows


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _plateau_cell(gain: Optional[float]) -> str:
    """The gain, marked plateaued (< 0.3 BLEU) or not (the row did not reach its plateau)."""
    if gain is None:
        return "n/a"
    return f"{gain:+.2f} ({'plateaued' if gain < 0.3 else 'not plateaued'})"


def markdown(rows: List[Row], teacher: dict, budget: int) -> str:
    """The table, the teacher first; variants sharing a label are summarised as mean ± spread."""
    lines = ["| variant | seed | sacreBLEU test | Δ vs first row | valid NLL (bits) | unique params | updates | "
             "s/update | corpus + cache s | training s | total s | valid BLEU gain, last 20 % | runaway hyps | "
             "decode tok/s × teacher |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if teacher.get("status") == "ok":
        lines.append(f"| teacher | | {teacher['bleu']['detok']:.2f} | | | {teacher['memory']['unique_parameters']:,} | "
                     f"| | | | | | {_cell(teacher.get('runaway'), 'd')} | 1.00 |")
    base = rows[0].bleu if rows else None
    for r in rows:
        delta = None if r.bleu is None or base is None else r.bleu - base
        lines.append(f"| {r.variant.title} | {r.variant.seed} | {_cell(r.bleu, '.2f')} | {_cell(delta, '+.2f')} | "
                     f"{_cell(r.valid_nll, '.3f')} | {_cell(r.unique_parameters, ',')} | {_cell(r.updates, 'd')} | "
                     f"{_cell(r.seconds_per_update, '.2f')} | {_cell(r.paid_seconds, '.0f')} | "
                     f"{_cell(r.train_seconds, '.0f')} | {_cell(r.total_seconds, '.0f')} | {_plateau_cell(r.plateau_gain)} | "
                     f"{_cell(r.runaway, 'd')} | "
                     f"{_cell(r.speed_ratio, '.2f')} |")
    groups: Dict[str, List[float]] = {}
    for r in rows:
        if r.bleu is not None:
            groups.setdefault(r.variant.title, []).append(r.bleu)
    repeated = {k: v for k, v in groups.items() if len(v) > 1}
    timed = [r for r in rows if r.variant.seconds is not None]
    notes = [f"Budget: {budget} student updates per variant" + (", except the wall-time budgets below." if timed else ".")]
    if timed:
        notes.append("Equal time: " + "; ".join(
            f"{r.variant.name} {r.variant.seconds:.0f} s budget, {_cell(r.total_seconds, '.0f')} s spent "
            f"(corpus + cache {_cell(r.paid_seconds, '.0f')} s), {_cell(r.updates, 'd')} updates, "
            f"BLEU {_cell(r.bleu, '.2f')}" for r in timed))
    for title, values in repeated.items():
        notes.append(f"{title}: {len(values)} seeds, mean {statistics.mean(values):.2f}, "
                     f"range {min(values):.2f}-{max(values):.2f}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def curves_of(variants: List[Variant], logs: Dict[str, str]) -> Dict[str, List[CurvePoint]]:
    return {f"{v.title} (seed {v.seed})": valid_points(logs[v.name]) for v in variants}
