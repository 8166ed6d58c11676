"""Writing the comparison: a Markdown table, a JSON file with every figure, and a PNG plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pet_fairseq.core.bleu import DETOK_LABEL, TOK_LABEL

MB = 1024 * 1024

COLUMNS = (
    "model", DETOK_LABEL, TOK_LABEL, "unique params", "ckpt MB (inference)", "peak RSS MB",
    "sent/s", "tok/s", "params ×", "size ×", "RSS ×", "speed × (sent/s)", "speed × (tok/s)", "Δ BLEU detok",
    "Δ BLEU tok",
)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table_row(row: dict) -> list[str]:
    """The Markdown cells of one model (``FAILED: reason`` for a model that failed)."""
    if row["status"] != "ok":
        reason = row["error"].replace("|", "\\|").replace("\n", " ")
        return [row["label"], f"FAILED: {reason}"] + [""] * (len(COLUMNS) - 2)
    mem, speed, ratios = row["memory"], row["speed"], row["ratios"] or {}
    return [
        row["label"],
        f"{row['bleu']['detok']:.2f}",
        f"{row['bleu']['tok']:.2f}",
        f"{mem['unique_parameters']:,}",
        f"{mem['inference_checkpoint_bytes'] / MB:.2f}",
        f"{mem['peak_rss_bytes'] / MB:.0f}",
        f"{speed['sentences_per_second']:.1f}",
        f"{speed['tokens_per_second']:.0f}",
        _fmt(ratios.get("unique_parameters"), ".3f"),
        _fmt(ratios.get("inference_checkpoint_bytes"), ".3f"),
        _fmt(ratios.get("peak_rss_bytes"), ".2f"),
        _fmt(ratios.get("sentences_per_second"), ".2f"),
        _fmt(ratios.get("tokens_per_second"), ".2f"),
        _fmt(ratios.get("bleu_detok_delta"), "+.2f"),
        _fmt(ratios.get("bleu_tok_delta"), "+.2f"),
    ]


def markdown_table(rows: list[dict]) -> str:
    """All models as a Markdown table; ratios and deltas are relative to the first row."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_row(row)) + " |" for row in rows]
    return "\n".join(lines)


def signatures(rows: list[dict]) -> list[str]:
    """The sacrebleu signatures of both BLEU variants (the same for every model)."""
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return []
    bleu = ok[0]["bleu"]
    return [f"{DETOK_LABEL}: {bleu['detok_signature']}", f"{TOK_LABEL}: {bleu['tok_signature']}"]


def write_json(path: str | os.PathLike, report: dict) -> None:
    """Write the full report (environment, settings, every model's figures) as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_benchmark_json(path: str | os.PathLike, device: str, threads: int, report: dict) -> None:
    """:func:`write_json` of a benchmark's ``report`` with the environment it ran in first."""
    from pet_fairseq.evaluation.environment import describe_environment

    write_json(path, {"environment": describe_environment(device, threads), **report})


def plot(path: str | os.PathLike, rows: list[dict]) -> bool:
    """BLEU vs unique parameters (marker area ∝ tokens/s) and a tokens/s panel; ``False`` if no model succeeded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return False
    labels = [row["label"] for row in ok]
    params = [row["memory"]["unique_parameters"] / 1e6 for row in ok]
    bleu = [row["bleu"]["detok"] for row in ok]
    tps = [row["speed"]["tokens_per_second"] for row in ok]
    sizes = [300 * t / max(tps) for t in tps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter(params, bleu, s=sizes, alpha=0.7)
    for x, y, label in zip(params, bleu, labels):
        left.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4))
    left.set(xlabel="unique parameters (millions)", ylabel=DETOK_LABEL,
             title="BLEU vs size (marker area ∝ tokens/s)")
    left.grid(alpha=0.3)
    right.bar(labels, tps, color="tab:orange")
    right.set(ylabel="target tokens / s", title="decode speed")
    right.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
