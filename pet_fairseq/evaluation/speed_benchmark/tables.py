"""The speed benchmark's report as Markdown tables: speed per model and engine, and the fairseq profile.

Invariant: the tables only format the report of :func:`pet_fairseq.evaluation.speed_benchmark.timing.run`
(plain data, also written as JSON); they compute no figure except rounding.
"""

from __future__ import annotations

from typing import Sequence

#: how the tables name each engine (the weight type and the shortlist are added by :func:`engine_label`)
ENGINE_NAMES = {"fairseq": "fairseq", "ctranslate2": "CTranslate2", "ctranslate2-shortlist": "CTranslate2"}


def engine_label(row: dict) -> str:
    """``fairseq``, ``CTranslate2 int8`` (with the weight type) or ``CTranslate2 int8 + shortlist``; with
    ``, 2 parallel batches`` when each batch was decoded in that many parts side by side."""
    label = f"{ENGINE_NAMES[row['engine']]} {row['quantization'] or ''}".strip()
    label += " + shortlist" if row["engine"] == "ctranslate2-shortlist" else ""
    parallel = row.get("parallel_batches", 1)
    return label + (f", {parallel} parallel batches" if parallel > 1 else "")


def speed_table(report: dict) -> str:
    """One row per (model, engine); per mode the speed (tok/s or ms/sentence) and its ratio to the first row."""
    header = ["model", "engine", "params"]
    for mode in report["modes"]:
        header += [f"{mode['name']}: {'tok/s' if mode['kind'] == 'throughput' else 'ms/sent'}", "×"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in report["models"]:
        cells = [row["label"], engine_label(row), f"{row['stored_parameters']:,}"]
        for mode in report["modes"]:
            figures = row["modes"][mode["name"]]
            if mode["kind"] == "throughput":
                cells += [f"{figures['tokens_per_second']:,.0f}", f"{figures['throughput_ratio']:.2f}"]
            else:
                cells += [f"{figures['ms_per_sentence']:.1f}", f"{figures['latency_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_table(rows: Sequence[dict]) -> str:
    """Per fairseq model: ms per sentence and the share of each part of the decode time."""
    from pet_fairseq.evaluation.decode_profile import CATEGORIES

    names = {"encoder": "encoder", "decoder_layers": "decoder layers", "output_projection": "output proj + softmax",
             "decoder_other": "decoder other", "search": "beam search / bookkeeping"}
    header = ["model", "ms/sent"] + [names[c] for c in CATEGORIES]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row["label"], f"{row['ms_per_sentence']['total']:.1f}"]
        cells += [f"{100 * row['share'][c]:.0f} % ({row['ms_per_sentence'][c]:.1f})" for c in CATEGORIES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_heading(report: dict) -> str:
    """The line printed above the profile table."""
    first = report["profile"][0]
    return (f"Where the decode time goes (fairseq, {first['mode']}, {first['sentences']} sentences; share of time "
            "and ms/sentence):")
