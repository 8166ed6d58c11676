"""The speed benchmark's run: build the models, time them mode by mode side by side, profile, report.

A mode is one (batch size, beam, sentences) setting: the ``--batch-size`` throughput modes, then the
batch-1 latency modes, each with every beam of ``--beams``. :func:`run` returns the report that
:mod:`~pet_fairseq.evaluation.speed_benchmark.tables` prints and ``--json`` writes.

Invariants: in a mode, every (model, engine) decodes the same prepared batches, and the passes are
interleaved, one per translator per round (:func:`~pet_fairseq.core.speed.measure_side_by_side`), so
a change of machine load hits all of them alike; every pass checks that each hypothesis has the forced
length (:func:`~pet_fairseq.evaluation.translators.decode_pass`). Ratios are to the first row (the
first model in the first engine), >1 = faster.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from pet_fairseq.core.speed import SpeedResult, measure_side_by_side
from pet_fairseq.evaluation.speed_benchmark.inputs import (
    load_dictionary,
    make_batches,
    read_sources,
    shortlist_prefix,
    source_path,
)
from pet_fairseq.evaluation.speed_benchmark.models import CT2_ENGINES, BenchModel, ModelSpec, build_models
from pet_fairseq.evaluation.speed_benchmark.tables import engine_label
from pet_fairseq.evaluation.translators import OutputLength, Translator, decode_pass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mode:
    """One timing setting: sentences per batch, beam size and how many sentences are decoded."""

    batch_size: int
    beam: int
    sentences: int

    @property
    def kind(self) -> str:
        return "latency" if self.batch_size == 1 else "throughput"

    @property
    def name(self) -> str:
        search = "greedy" if self.beam == 1 else f"beam {self.beam}"
        return f"batch {self.batch_size}, {search}"


def modes(args: argparse.Namespace) -> list[Mode]:
    """Throughput modes (``--batch-size``), then batch-1 latency modes, each with every beam."""
    out = [Mode(args.batch_size, beam, args.sentences) for beam in args.beam_list]
    if args.latency_sentences:
        out += [Mode(1, beam, args.latency_sentences) for beam in args.beam_list]
    return out


def time_mode(mode: Mode, translators: Sequence[Translator], sources: Sequence[Sequence[int]], length: OutputLength,
              repeats: int, warmup: int, bar: Any) -> list[SpeedResult]:
    """Every translator on the same batches of the first ``mode.sentences`` sources, interleaved."""
    batches = make_batches(sources[: mode.sentences], mode.batch_size)
    prepared = [[translator.prepare(batch) for batch in batches] for translator in translators]
    bar.set_description(f"decode ({mode.name})")
    return measure_side_by_side(
        [lambda t=t, p=p: decode_pass(t, p, mode.beam, length) for t, p in zip(translators, prepared)],
        repeats, warmup, on_pass=bar.update,
        warmup_fns=[lambda t=t, p=p: decode_pass(t, p[:1], mode.beam, length) for t, p in zip(translators, prepared)],
    )


def speed_figures(result: SpeedResult) -> dict:
    """Every timing figure of one (model, engine, mode), plus ms per sentence."""
    return {**result.to_dict(), "ms_per_sentence": 1000 * result.median_seconds / result.sentences}


def add_ratios(rows: list[dict], mode_names: Sequence[str]) -> None:
    """Per mode: tokens/s and latency of every row relative to ``rows[0]`` (>1 = faster)."""
    reference = rows[0]["modes"]
    for row in rows:
        for name in mode_names:
            figures, ref = row["modes"][name], reference[name]
            figures["throughput_ratio"] = figures["tokens_per_second"] / ref["tokens_per_second"]
            figures["latency_ratio"] = ref["ms_per_sentence"] / figures["ms_per_sentence"]


def profile(models: Sequence[BenchModel], sources: Sequence[Sequence[int]], mode: Mode,
            length: OutputLength) -> list[dict]:
    """Where each fairseq model's decode time goes, decoding ``sources`` once in ``mode``."""
    from pet_fairseq.evaluation.decode_profile import profile_decoding

    rows = []
    for entry in models:
        translator = entry.translators.get(("fairseq", 1))
        if translator is None:
            continue
        prepared = [translator.prepare(batch) for batch in make_batches(sources, mode.batch_size)]
        decode_pass(translator, prepared[:1], mode.beam, length)  # warm-up
        seconds = profile_decoding(translator.model, lambda: decode_pass(translator, prepared, mode.beam, length))
        rows.append({"label": entry.spec.label, "sentences": len(sources), "mode": mode.name,
                     "ms_per_sentence": {k: 1000 * v / len(sources) for k, v in seconds.items()},
                     "share": {k: v / seconds["total"] for k, v in seconds.items() if k != "total"}})
    return rows


def run(args: argparse.Namespace, specs: Sequence[ModelSpec] | None = None) -> dict:
    """Build, convert and time the models; return the report (settings, one row per model and engine, profile).

    ``args``: the checked options (:func:`pet_fairseq.evaluation.speed_benchmark.cli.validate_args`);
    ``specs``: the models (default: one per ``--archs`` architecture, with its defaults).
    """
    torch.set_num_threads(args.threads)
    specs = list(specs) if specs is not None else [ModelSpec(arch, arch) for arch in args.arch_list]
    dictionary = load_dictionary(args.dictionary, args.bpe_dir)
    sources_from = source_path(args)
    all_modes = modes(args)
    sources = read_sources(sources_from, dictionary, max(m.sentences for m in all_modes))
    length = OutputLength.forced(args.output_length)
    logger.info("dictionary: %d symbols; %d sources from %s; output forced to %d tokens (EOS included)",
                len(dictionary), len(sources), sources_from, args.output_length)
    with tempfile.TemporaryDirectory(prefix="pet-speed-") as tmp:
        workdir = args.work_dir or Path(tmp)
        models = build_models(args, specs, dictionary, workdir)
        pairs = [((engine, parallel), entry) for engine in args.engine_list
                 for parallel in (args.parallel_list if engine in CT2_ENGINES else [1]) for entry in models]
        rows = [{"label": entry.spec.label, "arch": entry.spec.arch, "options": list(entry.spec.options),
                 "engine": engine, "parallel_batches": parallel,
                 "quantization": args.quantization if engine in CT2_ENGINES else None,
                 "unique_parameters": entry.unique_parameters,
                 "stored_parameters": entry.stored_parameters.get(engine, entry.unique_parameters),
                 "disk_bytes": entry.disk_bytes.get(engine), "modes": {}} for (engine, parallel), entry in pairs]
        translators = [entry.translators[key] for key, entry in pairs]
        steps = len(all_modes) * len(translators) * (args.repeats + args.warmup)
        with tqdm(total=steps, desc="decode", unit="pass", file=sys.stderr, mininterval=2.0) as bar:
            for mode in all_modes:
                results = time_mode(mode, translators, sources, length, args.repeats, args.warmup, bar)
                for row, result in zip(rows, results):
                    row["modes"][mode.name] = {"batch_size": mode.batch_size, "beam": mode.beam,
                                               **speed_figures(result)}
                logger.info("%s: %s", mode.name, ", ".join(
                    f"{row['label']} ({engine_label(row)}) {row['modes'][mode.name]['tokens_per_second']:.0f} tok/s"
                    for row in rows))
        add_ratios(rows, [m.name for m in all_modes])
        profiled = []
        if args.profile_sentences:
            logger.info("profiler run: %d sentences, %s", args.profile_sentences, all_modes[0].name)
            profiled = profile(models, sources[: args.profile_sentences], all_modes[0], length)
        for translator in translators:
            getattr(translator, "close", lambda: None)()
    return {"settings": settings(args, dictionary, sources_from),
            "reference": f"{rows[0]['label']} ({rows[0]['engine']})",
            "modes": [{"name": m.name, "kind": m.kind, "batch_size": m.batch_size, "beam": m.beam,
                       "sentences": m.sentences} for m in all_modes],
            "models": rows, "profile": profiled}


def settings(args: argparse.Namespace, dictionary: Any, sources_from: Path) -> dict:
    """The options that shape the figures, for the JSON report."""
    return {"archs": args.arch_list, "dictionary": str(args.dictionary or f"counted from {args.bpe_dir}"),
            "dictionary_size": len(dictionary), "source_text": str(sources_from), "output_length": args.output_length,
            "engines": args.engine_list, "ct2_parallel_batches": args.parallel_list,
            "quantization": args.quantization, "repeats": args.repeats,
            "shortlist_bitext": str(shortlist_prefix(args))
            if "ctranslate2-shortlist" in args.engine_list else None,
            "shortlist_per_token": args.shortlist_per_token or "the export's default",
            "warmup": args.warmup, "threads": args.threads, "seed": args.seed}
