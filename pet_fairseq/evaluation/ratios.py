"""Figures of every model relative to the first (reference, usually the teacher) model."""

from __future__ import annotations

from pet_fairseq.core.speed import SpeedResult, speed_ratio


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference in (None, 0):
        return None
    return value / reference


def relative_figures(row: dict, reference: dict) -> dict:
    """Size ratios, speed ratios (>1 = faster) and BLEU differences of ``row`` vs ``reference``."""
    mem, ref_mem = row["memory"], reference["memory"]
    speed = speed_ratio(SpeedResult.from_dict(row["speed"]), SpeedResult.from_dict(reference["speed"]))
    return {
        "unique_parameters": _ratio(mem["unique_parameters"], ref_mem["unique_parameters"]),
        "inference_checkpoint_bytes": _ratio(mem["inference_checkpoint_bytes"], ref_mem["inference_checkpoint_bytes"]),
        "peak_rss_bytes": _ratio(mem["peak_rss_bytes"], ref_mem["peak_rss_bytes"]),
        "peak_gpu_bytes": _ratio(mem.get("peak_gpu_bytes"), ref_mem.get("peak_gpu_bytes")),
        "sentences_per_second": speed["sentences_per_second"],
        "tokens_per_second": speed["tokens_per_second"],
        "bleu_detok_delta": row["bleu"]["detok"] - reference["bleu"]["detok"],
        "bleu_tok_delta": row["bleu"]["tok"] - reference["bleu"]["tok"],
    }


def add_ratios(rows: list[dict]) -> None:
    """Set ``row["ratios"]`` for every successful row, relative to ``rows[0]``.

    When the first model failed there is no reference, and every ``ratios`` is ``None``.
    """
    reference = rows[0] if rows and rows[0]["status"] == "ok" else None
    for row in rows:
        row["ratios"] = relative_figures(row, reference) if reference and row["status"] == "ok" else None
