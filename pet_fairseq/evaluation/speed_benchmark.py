"""Decode speed of named architectures at their real sizes, fairseq and CTranslate2 side by side.

    python -m pet_fairseq.evaluation.speed_benchmark \\
        --archs transformer_iwslt_de_en,pet_iwslt_de_en,pet_deep_shallow_iwslt_de_en --json speed.json

At a fixed output length, decoding time does not depend on the weights, so the models are built
with random initialisation (``fairseq-train``'s argument parsing and ``build_model``) on a
dictionary: by default the joined IWSLT'14 BPE dictionary counted from ``../shared/data``'s
``iwslt14-de-en/bpe10k`` (valid + test, both sides, padded to a multiple of 8 like
``fairseq-preprocess``), and the sources are the first ``--sentences`` lines of its ``test.de``.
Every model, in every engine, generates exactly ``--output-length`` tokens (EOS included) per
sentence (fairseq: ``min_len = max_len``; CTranslate2: ``min_decoding_length = max_decoding_length``),
which :func:`~pet_fairseq.evaluation.translators.decode_pass` checks.

Each model is also converted by the project's export in a subprocess (``python -m
pet_fairseq.export ctranslate2``, ``--quantization int8`` by default), then decoded with CTranslate2
in a torch-free worker process per model (:class:`~pet_fairseq.evaluation.translators.CTranslate2Translator`;
in one process, CTranslate2's and torch's OpenMP threads slow each other): over the whole vocabulary (engine
``ctranslate2``) and with a lexical vocabulary
shortlist (engine ``ctranslate2-shortlist``; ``python -m pet_fairseq.export shortlist`` counted on
``--shortlist-bitext``, by default the IWSLT'14 valid set, disjoint from the timed test sentences).
``--ct2-parallel-batches 1,2`` times each CTranslate2 engine both ways: every batch decoded by one
worker on all ``--threads``, and cut into two parts decoded side by side by two workers on half the
threads each (CTranslate2's ``inter_threads``, its setting for throughput).
Modes: batch ``--batch-size`` throughput (target tokens/s) and batch-1 latency (ms per sentence),
each with every beam of ``--beams`` (default 5 and greedy). In each mode all models and engines are
timed on the same batches, interleaved (:func:`~pet_fairseq.core.speed.measure_side_by_side`),
median of ``--repeats``. Ratios are to the first model in the first engine (>1 = faster). A profiler
run (:mod:`~pet_fairseq.evaluation.decode_profile`) splits each fairseq model's beam-search time into
encoder, decoder layers, output projection and search bookkeeping.

Prints Markdown tables; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from pet_fairseq.core.cli import command
from pet_fairseq.core.ctranslate2.decoding import check_parallel_batches
from pet_fairseq.core.speed import SpeedResult, measure_side_by_side
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.report import write_benchmark_json
from pet_fairseq.evaluation.runner import PACKAGE_ROOT, run_streaming
from pet_fairseq.evaluation.translators import (
    CTranslate2Translator,
    FairseqTranslator,
    OutputLength,
    Translator,
    decode_pass,
)

logger = logging.getLogger("pet_fairseq.evaluation.speed_benchmark")

SHARED_DATA = Path(os.environ.get("PET_SHARED_DATA", PACKAGE_ROOT.parent / "shared" / "data"))
DEFAULT_BPE_DIR = SHARED_DATA / "iwslt14-de-en" / "bpe10k"
ENGINES = ("fairseq", "ctranslate2", "ctranslate2-shortlist")
ENGINE_NAMES = {"fairseq": "fairseq", "ctranslate2": "CTranslate2", "ctranslate2-shortlist": "CTranslate2"}
CT2_ENGINES = ENGINES[1:]
#: lines of the converter's stderr quoted when it fails
EXPORT_ERROR_LINES = 5


@dataclass(frozen=True)
class ModelSpec:
    """A model to build: a registered architecture plus extra ``fairseq-train`` options, under a label."""

    label: str
    arch: str
    options: tuple[str, ...] = ()


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


@dataclass
class BenchModel:
    """A built model: its spec, unique parameter count and the translators (one per engine) that run it."""

    spec: ModelSpec
    unique_parameters: int
    translators: dict[tuple[str, int], Translator] = field(default_factory=dict)  # (engine, parallel batches)
    stored_parameters: dict[str, int] = field(default_factory=dict)
    disk_bytes: dict[str, int] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(prog="pet-speed-benchmark",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", required=True,
                   help="comma-separated registered architectures, e.g. transformer_iwslt_de_en,pet_iwslt_de_en; "
                   "the first is the reference")
    p.add_argument("--dictionary", type=Path,
                   help="fairseq dict.txt used on both sides (default: counted from --bpe-dir's valid/test files)")
    p.add_argument("--bpe-dir", type=Path, default=DEFAULT_BPE_DIR,
                   help="folder with BPE'd {valid,test}.{de,en} (default: %(default)s)")
    p.add_argument("--source-text", type=Path,
                   help="BPE'd source sentences, one per line (default: BPE_DIR/test.de)")
    p.add_argument("--source-lang", default="de", help="default: de")
    p.add_argument("--target-lang", default="en", help="default: en")
    p.add_argument("--sentences", type=int, default=600, help="sentences timed in the throughput modes (default: 600)")
    p.add_argument("--latency-sentences", type=int, default=50,
                   help="sentences timed one at a time in the batch-1 modes (default: 50; 0 skips them)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="sentences per batch in the throughput modes (default: 64)")
    p.add_argument("--beams", default="5,1", help="beam sizes, 1 = greedy (default: 5,1)")
    p.add_argument("--output-length", type=int, default=31,
                   help="tokens generated per sentence, EOS included, for every model (default: 31 = 30 + EOS)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="any of fairseq, ctranslate2, ctranslate2-shortlist (default: all three)")
    p.add_argument("--shortlist-bitext", type=Path,
                   help="prefix of the BPE'd bitext counted for the shortlist, PREFIX.{source,target} lang "
                   "(default: BPE_DIR/valid)")
    p.add_argument("--shortlist-per-token", type=int,
                   help="shortlist candidates per source token (default: the export's, 10)")
    p.add_argument("--ct2-parallel-batches", default="1",
                   help="comma-separated: each CTranslate2 engine decodes every batch as this many parts side by side, "
                   "each on threads / N threads; 1 = one worker on all threads (default: 1; e.g. 1,2 times both)")
    p.add_argument("--quantization", default="int8", help="CTranslate2 weight type at conversion (default: int8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per mode; median reported (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over the first batch first (default: 1)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch and CTranslate2 threads (default: torch's, here %(default)s)")
    p.add_argument("--profile-sentences", type=int, default=128,
                   help="sentences of the profiler run (first mode's batch and beam; default: 128; 0 skips it)")
    p.add_argument("--seed", type=int, default=1, help="random initialisation seed (default: 1)")
    p.add_argument("--work-dir", type=Path,
                   help="keep the random checkpoints and CTranslate2 models here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return p


def parse_int_list(text: str, option: str) -> list[int]:
    """``"5,1"`` -> [5, 1]; a clear error for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{option} {text!r}: give comma-separated whole numbers >= 1, e.g. 5,1")
    return values


def check_archs(names: Sequence[str]) -> list[str]:
    """The names, if every one is a registered architecture; else an error suggesting close names."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    import pet_fairseq  # noqa: F401  (registers the plugin's architectures)

    if not names:
        raise EvaluationError("--archs: give at least one architecture")
    for name in names:
        if name not in ARCH_MODEL_NAME_REGISTRY:
            close = difflib.get_close_matches(name, list(ARCH_MODEL_NAME_REGISTRY), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EvaluationError(f"--archs: unknown architecture {name!r}{hint}")
    if len(set(names)) != len(names):
        raise EvaluationError(f"--archs lists an architecture twice: {', '.join(names)}")
    return list(names)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject options that cannot work before any model is built."""
    try:
        args.beam_list = parse_int_list(args.beams, "--beams")
        args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
        args.parallel_list = parse_int_list(args.ct2_parallel_batches, "--ct2-parallel-batches")
        args.arch_list = check_archs([a.strip() for a in args.archs.split(",") if a.strip()])
    except (ValueError, EvaluationError) as exc:
        parser.error(str(exc))
    unknown = [e for e in args.engine_list if e not in ENGINES]
    if unknown or not args.engine_list:
        parser.error(f"--engines {args.engines!r}: choose from {', '.join(ENGINES)}")
    if min(args.sentences, args.batch_size, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--sentences, --batch-size, --repeats and --threads must be >= 1, --warmup >= 0")
    try:
        for parallel in args.parallel_list:
            check_parallel_batches(parallel, args.threads)
    except ValueError as exc:
        parser.error(f"--ct2-parallel-batches {args.ct2_parallel_batches} with --threads {args.threads}: {exc}")
    if len(set(args.parallel_list)) != len(args.parallel_list):
        parser.error(f"--ct2-parallel-batches {args.ct2_parallel_batches} lists a value twice")
    if args.shortlist_per_token is not None and args.shortlist_per_token < 1:
        parser.error(f"--shortlist-per-token {args.shortlist_per_token}: must be >= 1")
    if min(args.latency_sentences, args.profile_sentences) < 0:
        parser.error("--latency-sentences and --profile-sentences must be >= 0")
    if args.output_length < 2:
        parser.error(f"--output-length {args.output_length}: must be >= 2 (EOS included)")
    if args.dictionary is not None and not args.dictionary.is_file():
        parser.error(f"--dictionary {args.dictionary} does not exist")
    if args.source_text is not None and not args.source_text.is_file():
        parser.error(f"--source-text {args.source_text} does not exist")
    if args.dictionary is not None and args.shortlist_bitext is None and "ctranslate2-shortlist" in args.engine_list:
        parser.error("--dictionary is given, so the default shortlist bitext (BPE_DIR/valid) may not match it: pass "
                     "--shortlist-bitext PREFIX (BPE'd with that dictionary) or leave ctranslate2-shortlist out of "
                     "--engines")
    if args.shortlist_bitext is not None and "ctranslate2-shortlist" in args.engine_list:
        try:
            shortlist_files(args.shortlist_bitext, args)
        except EvaluationError as exc:
            parser.error(str(exc))


def shortlist_prefix(args: argparse.Namespace) -> Path:
    """``--shortlist-bitext``, else the valid set of ``--bpe-dir``."""
    return args.shortlist_bitext or args.bpe_dir / "valid"


def shortlist_files(prefix: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The source and target files of a bitext ``prefix`` (``PREFIX.de``, ``PREFIX.en``); an error if one is missing."""
    files = tuple(Path(f"{prefix}.{lang}") for lang in (args.source_lang, args.target_lang))
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise EvaluationError(f"--shortlist-bitext: {', '.join(missing)} not found; pass --shortlist-bitext PREFIX "
                              "(the BPE'd PREFIX.{source,target} lang) or leave ctranslate2-shortlist out of --engines")
    return files


# --------------------------------------------------------------------------------------------
# dictionary, sources, models


def bpe_files(bpe_dir: Path) -> list[Path]:
    """The BPE'd ``{valid,test}.{de,en}`` files of ``bpe_dir`` that exist; an error naming the folder if none."""
    files = [bpe_dir / f"{split}.{lang}" for split in ("valid", "test") for lang in ("de", "en")]
    found = [path for path in files if path.is_file()]
    if not found:
        raise EvaluationError(f"no BPE'd valid/test files in {bpe_dir}: pass --dictionary DICT.txt and --source-text, "
                              "or --bpe-dir with the IWSLT'14 bpe10k folder of ../shared/data (see its README)")
    return found


def count_dictionary(paths: Sequence[Path]) -> Any:
    """A joined fairseq ``Dictionary`` of every token in ``paths``, padded to a multiple of 8 (fairseq-preprocess)."""
    from collections import Counter

    from fairseq.data import Dictionary

    counts: Counter = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    dictionary = Dictionary()
    for symbol, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        dictionary.add_symbol(symbol, n=count)
    dictionary.finalize(padding_factor=8)
    return dictionary


def load_dictionary(path: Path | None, bpe_dir: Path) -> Any:
    """``--dictionary`` if given, else :func:`count_dictionary` over :func:`bpe_files` of ``bpe_dir``."""
    from fairseq.data import Dictionary

    if path is not None:
        return Dictionary.load(str(path))
    return count_dictionary(bpe_files(bpe_dir))


def read_sources(path: Path, dictionary: Any, count: int) -> list[list[int]]:
    """The first ``count`` non-empty lines of a BPE'd text file as token ids (no EOS)."""
    sources = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                sources.append(dictionary.encode_line(line, add_if_not_exist=False, append_eos=False).tolist())
                if len(sources) == count:
                    break
    if len(sources) < count:
        raise EvaluationError(f"{path} has {len(sources)} non-empty lines; {count} are needed (lower --sentences)")
    return sources


def make_batches(sources: Sequence[Sequence[int]], batch_size: int) -> list[list[Sequence[int]]]:
    """Sentences sorted by length (stable, as fairseq orders a test set), ``batch_size`` per batch."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [[sources[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def build_random_model(spec: ModelSpec, data_bin: Path, langs: tuple[str, str], seed: int) -> tuple[Any, Any, Any]:
    """(model, task, cfg) of ``spec`` with random weights, built as ``fairseq-train`` builds it on ``data_bin``."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import pet_fairseq  # noqa: F401

    parser = options.get_training_parser()
    argv = [str(data_bin), "--arch", spec.arch, "--task", "translation", "-s", langs[0], "-t", langs[1],
            "--user-dir", str(PACKAGE_ROOT / "pet_fairseq"), "--max-source-positions", "1024",
            "--max-target-positions", "1024", *spec.options]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model).eval()
    return model, task, cfg


def save_checkpoint(model: torch.nn.Module, cfg: Any, path: Path) -> Path:
    """Write ``model`` as a fairseq checkpoint (configuration + weights) that the export reads."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": model.state_dict(),
             "args": None, "extra_state": {}, "optimizer_history": [{"num_updates": 0}]}
    checkpoint_utils.torch_persistent_save(state, str(path))
    return path


def build_models(args: argparse.Namespace, specs: Sequence[ModelSpec], dictionary: Any,
                 workdir: Path) -> list[BenchModel]:
    """Build every spec with random weights; export it to CTranslate2 when that engine is asked for."""
    from pet_fairseq.evaluation.memory import unique_parameter_count

    data_bin = workdir / "data-bin"
    data_bin.mkdir(parents=True, exist_ok=True)
    langs = (args.source_lang, args.target_lang)
    for lang in langs:
        dictionary.save(str(data_bin / f"dict.{lang}.txt"))
    vmap = write_shortlist(args, data_bin, workdir) if "ctranslate2-shortlist" in args.engine_list else None
    built = []
    for spec in specs:
        model, task, cfg = build_random_model(spec, data_bin, langs, args.seed)
        entry = BenchModel(spec=spec, unique_parameters=unique_parameter_count(model))
        logger.info("%s: %s, %s unique parameters", spec.label, type(model).__name__, f"{entry.unique_parameters:,}")
        if "fairseq" in args.engine_list:
            entry.translators["fairseq", 1] = FairseqTranslator(spec.label, model, task)
        engines = [engine for engine in CT2_ENGINES if engine in args.engine_list]
        if engines:
            ct2_dir = export_ctranslate2(model, cfg, spec, workdir, data_bin, langs, args.quantization, args.threads,
                                         vmap)
            for engine in engines:
                for parallel in args.parallel_list:
                    entry.translators[engine, parallel] = CTranslate2Translator(
                        spec.label, str(ct2_dir), task.source_dictionary, task.target_dictionary, args.threads,
                        use_vmap=engine == "ctranslate2-shortlist", parallel_batches=parallel)
                entry.stored_parameters[engine], entry.disk_bytes[engine] = ctranslate2_size(ct2_dir)
        built.append(entry)
    return built


def run_export(label: str, arguments: Sequence[str], threads: int) -> None:
    """``python -m pet_fairseq.export ARGUMENTS`` as a subprocess, as a user would run it.

    Its log is copied to stderr; a failure raises :class:`EvaluationError` with its last lines.
    """
    command = [sys.executable, "-m", "pet_fairseq.export", *arguments]
    returncode, tail = run_streaming(command, threads)
    if returncode != 0:
        last = "\n".join(tail[-EXPORT_ERROR_LINES:]) or "no output"
        raise EvaluationError(f"{label}: python -m pet_fairseq.export {arguments[0]} exited with code "
                              f"{returncode}:\n{last}")


def write_shortlist(args: argparse.Namespace, data_bin: Path, workdir: Path) -> Path:
    """The vocabulary shortlist of ``--shortlist-bitext`` (``python -m pet_fairseq.export shortlist``)."""
    source, target = shortlist_files(shortlist_prefix(args), args)
    vmap = workdir / "shortlist.vmap"
    per_token = ["--per-token", str(args.shortlist_per_token)] if args.shortlist_per_token else []
    run_export("shortlist", ["shortlist", str(vmap), "--data-bin", str(data_bin), "--source-lang", args.source_lang,
                             "--target-lang", args.target_lang, "--source-text", str(source), "--target-text",
                             str(target), "--force", *per_token], args.threads)
    return vmap


def export_ctranslate2(model: torch.nn.Module, cfg: Any, spec: ModelSpec, workdir: Path, data_bin: Path,
                       langs: tuple[str, str], quantization: str, threads: int, vmap: Path | None = None) -> Path:
    """Save ``model`` as a checkpoint and convert it with ``python -m pet_fairseq.export ctranslate2``.

    ``vmap``: a shortlist stored in the model (decoded with it only by ``ctranslate2-shortlist``).
    """
    checkpoint = save_checkpoint(model, cfg, workdir / f"{spec.label}.pt")
    out_dir = workdir / f"{spec.label}.ct2-{quantization}"
    arguments = ["ctranslate2", str(checkpoint), str(out_dir), "--quantization", quantization, "--data-bin",
                 str(data_bin), "--source-lang", langs[0], "--target-lang", langs[1], "--force"]
    run_export(spec.label, arguments + (["--vocab-shortlist", str(vmap)] if vmap else []), threads)
    return out_dir


def ctranslate2_size(model_dir: Path) -> tuple[int, int]:
    """(parameters stored in ``model.bin``, bytes of the model directory)."""
    from pet_fairseq.core.ctranslate2.model_dir import count_parameters, directory_bytes

    return count_parameters(model_dir), directory_bytes(model_dir)


# --------------------------------------------------------------------------------------------
# timing


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
    """Build, export and time the models; return the report (settings, one row per model and engine, profile)."""
    torch.set_num_threads(args.threads)
    specs = list(specs) if specs is not None else [ModelSpec(arch, arch) for arch in args.arch_list]
    dictionary = load_dictionary(args.dictionary, args.bpe_dir)
    source_path = args.source_text or args.bpe_dir / "test.de"
    if not source_path.is_file():
        raise EvaluationError(f"source text {source_path} does not exist; pass --source-text (BPE'd, one per line)")
    all_modes = modes(args)
    sources = read_sources(source_path, dictionary, max(m.sentences for m in all_modes))
    length = OutputLength.forced(args.output_length)
    logger.info("dictionary: %d symbols; %d sources from %s; output forced to %d tokens (EOS included)",
                len(dictionary), len(sources), source_path, args.output_length)
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
    return {"settings": settings(args, dictionary, source_path),
            "reference": f"{rows[0]['label']} ({rows[0]['engine']})",
            "modes": [{"name": m.name, "kind": m.kind, "batch_size": m.batch_size, "beam": m.beam,
                       "sentences": m.sentences} for m in all_modes],
            "models": rows, "profile": profiled}


def settings(args: argparse.Namespace, dictionary: Any, source_path: Path) -> dict:
    """The options that shape the figures, for the JSON report."""
    return {"archs": args.arch_list, "dictionary": str(args.dictionary or f"counted from {args.bpe_dir}"),
            "dictionary_size": len(dictionary), "source_text": str(source_path), "output_length": args.output_length,
            "engines": args.engine_list, "ct2_parallel_batches": args.parallel_list,
            "quantization": args.quantization, "repeats": args.repeats,
            "shortlist_bitext": str(shortlist_prefix(args))
            if "ctranslate2-shortlist" in args.engine_list else None,
            "shortlist_per_token": args.shortlist_per_token or "the export's default",
            "warmup": args.warmup, "threads": args.threads, "seed": args.seed}


# --------------------------------------------------------------------------------------------
# output


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


def engine_label(row: dict) -> str:
    """``fairseq``, ``CTranslate2 int8`` (with the weight type) or ``CTranslate2 int8 + shortlist``; with
    ``, 2 parallel batches`` when each batch was decoded in that many parts side by side."""
    label = f"{ENGINE_NAMES[row['engine']]} {row['quantization'] or ''}".strip()
    label += " + shortlist" if row["engine"] == "ctranslate2-shortlist" else ""
    parallel = row.get("parallel_batches", 1)
    return label + (f", {parallel} parallel batches" if parallel > 1 else "")


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


@command("speed-benchmark")
def main(argv: list[str] | None = None) -> int:
    """Print the speed table (and the profile table); with ``--json``, write every figure too."""
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_args(parser, args)
    report = run(args)
    print(speed_table(report))
    if report["profile"]:
        print(f"\nWhere the decode time goes (fairseq, {report['profile'][0]['mode']}, "
              f"{report['profile'][0]['sentences']} sentences; share of time and ms/sentence):\n")
        print(profile_table(report["profile"]))
    if args.json:
        write_benchmark_json(args.json, "cpu", args.threads, report)
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
