"""The models the speed benchmark times: built with random weights, converted to CTranslate2, one translator per engine.

A model is built from a registered architecture as ``fairseq-train`` builds it (its argument parsing
and ``build_model``) on a data-bin holding only the benchmark's dictionary, with random weights
seeded by ``--seed``: at a forced output length, decoding time does not depend on the weights. For
the CTranslate2 engines the model is written as a fairseq checkpoint and converted by the export's
conversion (:func:`pet_fairseq.core.ctranslate2.convert.convert`: unroll, then CTranslate2's
converter), with the vocabulary shortlist stored in it when ``ctranslate2-shortlist`` is timed.

Invariant: every engine decodes the same model. The fairseq translator holds the built module itself,
and the CTranslate2 model directory is converted from a checkpoint of exactly that module's weights
(the conversion checks the unrolled model against it); both CTranslate2 engines (with and without
the shortlist) and every ``--ct2-parallel-batches`` setting share that one directory.

Where it runs. The conversion runs in this process: it is Python and numpy and starts none of
CTranslate2's threads (the thread count of the process is the same before and after it), so the
OpenMP contention that puts CTranslate2 *decoding* into torch-free worker processes
(:class:`~pet_fairseq.evaluation.translators.CTranslate2Translator`, docs/speed.md) does not arise.
The shortlist is counted by the export tool's command (``python -m pet_fairseq.export shortlist``) in a
subprocess: that counting lives in the export tool, which this tool may not import
(tests/test_layering.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from pet_fairseq.core.errors import ExportError
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.runner import PACKAGE_ROOT, run_streaming
from pet_fairseq.evaluation.speed_benchmark.inputs import shortlist_files, shortlist_prefix
from pet_fairseq.evaluation.translators import CTranslate2Translator, FairseqTranslator, Translator

logger = logging.getLogger(__name__)

ENGINES = ("fairseq", "ctranslate2", "ctranslate2-shortlist")
CT2_ENGINES = ENGINES[1:]
#: lines of the shortlist command's stderr quoted when it fails
EXPORT_ERROR_LINES = 5


@dataclass(frozen=True)
class ModelSpec:
    """A model to build: a registered architecture plus extra ``fairseq-train`` options, under a label."""

    label: str
    arch: str
    options: tuple[str, ...] = ()


@dataclass
class BenchModel:
    """A built model: its spec, unique parameter count and the translators (one per engine) that run it."""

    spec: ModelSpec
    unique_parameters: int
    translators: dict[tuple[str, int], Translator] = field(default_factory=dict)  # (engine, parallel batches)
    stored_parameters: dict[str, int] = field(default_factory=dict)
    disk_bytes: dict[str, int] = field(default_factory=dict)


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


def export_ctranslate2(model: torch.nn.Module, cfg: Any, spec: ModelSpec, workdir: Path, data_bin: Path,
                       langs: tuple[str, str], quantization: str, vmap: Path | None = None) -> Path:
    """Save ``model`` as a checkpoint and convert it to a CTranslate2 model directory in this process.

    ``vmap``: a shortlist stored in the model (decoded with it only by ``ctranslate2-shortlist``).
    A failed conversion is an :class:`EvaluationError` carrying the export's message.
    """
    from pet_fairseq.core.ctranslate2.convert import convert

    checkpoint = save_checkpoint(model, cfg, workdir / f"{spec.label}.pt")
    out_dir = workdir / f"{spec.label}.ct2-{quantization}"
    try:
        return convert(checkpoint, out_dir, quantization=quantization, data_bin=data_bin, source_lang=langs[0],
                       target_lang=langs[1], force=True, vocab_shortlist=vmap)
    except ExportError as exc:
        raise EvaluationError(f"{spec.label}: the CTranslate2 conversion failed: {exc}") from exc


def write_shortlist(args: argparse.Namespace, data_bin: Path, workdir: Path) -> Path:
    """The vocabulary shortlist of ``--shortlist-bitext`` (``python -m pet_fairseq.export shortlist``, a subprocess).

    Its log is copied to stderr; a failure raises :class:`EvaluationError` with its last lines.
    """
    source, target = shortlist_files(shortlist_prefix(args), args)
    vmap = workdir / "shortlist.vmap"
    per_token = ["--per-token", str(args.shortlist_per_token)] if args.shortlist_per_token else []
    command = [sys.executable, "-m", "pet_fairseq.export", "shortlist", str(vmap), "--data-bin", str(data_bin),
               "--source-lang", args.source_lang, "--target-lang", args.target_lang, "--source-text", str(source),
               "--target-text", str(target), "--force", *per_token]
    returncode, tail = run_streaming(command, args.threads)
    if returncode != 0:
        last = "\n".join(tail[-EXPORT_ERROR_LINES:]) or "no output"
        raise EvaluationError(f"python -m pet_fairseq.export shortlist exited with code {returncode}:\n{last}")
    return vmap


def ctranslate2_size(model_dir: Path) -> tuple[int, int]:
    """(parameters stored in ``model.bin``, bytes of the model directory)."""
    from pet_fairseq.core.ctranslate2.model_dir import count_parameters, directory_bytes

    return count_parameters(model_dir), directory_bytes(model_dir)


def build_models(args: argparse.Namespace, specs: Sequence[ModelSpec], dictionary: Any,
                 workdir: Path) -> list[BenchModel]:
    """Build every spec with random weights; convert it to CTranslate2 when one of those engines is asked for."""
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
            ct2_dir = export_ctranslate2(model, cfg, spec, workdir, data_bin, langs, args.quantization, vmap)
            for engine in engines:
                for parallel in args.parallel_list:
                    entry.translators[engine, parallel] = CTranslate2Translator(
                        spec.label, str(ct2_dir), task.source_dictionary, task.target_dictionary, args.threads,
                        use_vmap=engine == "ctranslate2-shortlist", parallel_batches=parallel)
                entry.stored_parameters[engine], entry.disk_bytes[engine] = ctranslate2_size(ct2_dir)
        built.append(entry)
    return built
