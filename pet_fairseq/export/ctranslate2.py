"""CTranslate2 export: unroll a student, convert it with CTranslate2's fairseq converter, decode with it.

``ctranslate2`` is an optional extra (``pip install -e .[ctranslate2]``); it is imported only when
a function here needs it. Its converter imports fairseq and builds the model from the checkpoint's
configuration, so it only knows standard fairseq architectures: PET students are unrolled first
(:mod:`pet_fairseq.export.unroll`).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from pet_fairseq.evaluation.checks import resolve_languages
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.export import ct2_worker
from pet_fairseq.export.unroll import ExportError, model_dictionary_dir, read_student, unroll_state, verify

logger = logging.getLogger("pet_fairseq.export")

#: written next to model.bin: where the model came from and its language pair
EXPORT_INFO = "pet_export.json"
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


def require_ctranslate2():
    """The ``ctranslate2`` module, or an :class:`ExportError` saying how to install it."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise ExportError("the ctranslate2 package is not installed: pip install -e '.[ctranslate2]' "
                          "(or pip install 'ctranslate2>=4.0')") from exc
    return ctranslate2


def is_model_dir(path: "str | os.PathLike") -> bool:
    """Whether ``path`` is a CTranslate2 model directory (a folder holding ``model.bin``)."""
    return Path(path).is_dir() and (Path(path) / "model.bin").is_file()


def _converter_input(unrolled: Dict[str, Any], path: Path) -> None:
    """Write ``unrolled`` the way CTranslate2's converter reads checkpoints: options in ``args``.

    The converter takes ``checkpoint["args"] or checkpoint["cfg"]["model"]`` and sets attributes on
    it, so it needs a namespace holding the model *and* task options (like a fairseq-train ``args``).
    """
    cfg = unrolled["cfg"]
    options = {k: v for k, v in cfg["task"].items() if k != "_name"}
    options.update({k: v for k, v in cfg["model"].items()})
    options["task"] = "translation"
    torch.save({**unrolled, "args": argparse.Namespace(**options)}, path)


def convert(student: "str | os.PathLike", out_dir: "str | os.PathLike", quantization: Optional[str] = None,
            data_bin: "str | os.PathLike | None" = None, source_lang: Optional[str] = None,
            target_lang: Optional[str] = None, force: bool = False, check: bool = True,
            keep_unrolled: "str | os.PathLike | None" = None) -> Path:
    """Unroll ``student`` and convert it to a CTranslate2 model in ``out_dir``; returns ``out_dir``.

    ``data_bin`` holds the ``dict.{lang}.txt`` dictionaries (default: the model's training data-bin).
    """
    ctranslate2 = require_ctranslate2()
    from ctranslate2.converters import FairseqConverter

    student, out_dir = Path(student), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} exists and is not empty; pass --force to overwrite it")
    state = read_student(student)
    unrolled, summary = unroll_state(state, student)
    if check:
        verify(state, unrolled)
    del state
    data_bin = Path(data_bin) if data_bin else model_dictionary_dir(unrolled["cfg"])
    if data_bin is None or not data_bin.is_dir():
        raise ExportError(f"the dictionaries' folder {data_bin or '(not recorded in the checkpoint)'} does not exist; "
                          "pass --data-bin with the data-bin the model was trained on")
    try:  # the options, else the checkpoint's task, else the data-bin's only language pair
        src, tgt = resolve_languages(unrolled, data_bin, source_lang, target_lang)
    except EvaluationError as exc:
        raise ExportError(str(exc)) from exc
    missing = [f"dict.{lang}.txt" for lang in (src, tgt) if not (data_bin / f"dict.{lang}.txt").is_file()]
    if missing:
        raise ExportError(f"dictionaries {', '.join(missing)} not found in {data_bin}; "
                          "pass --data-bin with the data-bin the model was trained on")
    with tempfile.TemporaryDirectory(prefix="pet-export-") as tmp:
        model_path = Path(tmp) / "unrolled.args.pt"
        _converter_input(unrolled, model_path)
        if keep_unrolled:
            Path(keep_unrolled).parent.mkdir(parents=True, exist_ok=True)
            torch.save(unrolled, keep_unrolled)
        converter = FairseqConverter(str(model_path), str(data_bin.resolve()), source_lang=src, target_lang=tgt)
        try:
            converter.convert(str(out_dir), quantization=quantization, force=force)
        except (ValueError, NotImplementedError) as exc:  # the converter's "not supported" messages
            raise ExportError(f"CTranslate2 cannot convert {student}: {' '.join(str(exc).split())}") from exc
    info = {"source": str(student.resolve()), "source_arch": summary.source_arch, "source_lang": src,
            "target_lang": tgt, "data_bin": str(data_bin.resolve()), "quantization": quantization or "float32",
            "ctranslate2_version": ctranslate2.__version__, "encoder_plan": summary.encoder_plan,
            "decoder_plan": summary.decoder_plan, "student_unique_parameters": summary.unique_parameters,
            "unrolled_parameters": summary.unrolled_parameters}
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("%s", summary.describe())
    logger.info("wrote CTranslate2 model (%s) to %s (%.2f MB)", info["quantization"], out_dir,
                ct2_worker.directory_bytes(out_dir) / 2**20)
    return out_dir


def export_info(model_dir: "str | os.PathLike") -> Dict[str, Any]:
    """What :func:`convert` recorded about a model directory (empty for models converted elsewhere)."""
    path = Path(model_dir) / EXPORT_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --------------------------------------------------------------------------------------------
# data


def _vocabulary(model_dir: Path, side: str) -> Optional[List[str]]:
    for name in (f"{side}_vocabulary.json", "shared_vocabulary.json"):
        if (model_dir / name).is_file():
            return json.loads((model_dir / name).read_text(encoding="utf-8"))
    return None


def check_vocabularies(model_dir: Path, data_bin: Path, src: str, tgt: str) -> None:
    """Raise :class:`ExportError` if the model's vocabularies are not the data-bin's dictionaries."""
    from pet_fairseq.evaluation.checks import load_symbols

    problems = []
    for side, lang in (("source", src), ("target", tgt)):
        vocab = _vocabulary(model_dir, side)
        path = data_bin / f"dict.{lang}.txt"
        if vocab is None or not path.is_file():
            problems.append(f"{side}: {'no vocabulary in ' + str(model_dir) if vocab is None else str(path) + ' is missing'}")
            continue
        symbols = ["<blank>" if s == "<pad>" else s for s in load_symbols(path)]  # as the converter writes them
        if vocab != symbols:
            first = next((i for i, (x, y) in enumerate(zip(vocab, symbols)) if x != y), min(len(vocab), len(symbols)))
            problems.append(f"{side}: the model's {len(vocab):,}-entry vocabulary differs from {path} "
                            f"({len(symbols):,} symbols) at index {first}")
    if problems:
        raise ExportError("vocabulary mismatch between the CTranslate2 model and the data-bin: " + "; ".join(problems))


def read_subset(data_bin: Path, subset: str, src: str, tgt: str) -> Tuple[List[List[str]], List[str]]:
    """Source token lists (without EOS, which CTranslate2 adds) and reference strings of a binarized subset,
    in sentence-id order; references are rendered as ``pet_fairseq.evaluation.decode`` renders them."""
    from fairseq.data import Dictionary, data_utils

    from pet_fairseq.evaluation.checks import check_subset, subset_files

    check_subset(data_bin, subset, src, tgt)
    files = next(f for f in subset_files(data_bin, subset, src, tgt) if all(p.is_file() for p in f))
    src_dict, tgt_dict = (Dictionary.load(str(data_bin / f"dict.{lang}.txt")) for lang in (src, tgt))
    src_data = data_utils.load_indexed_dataset(str(files[0])[: -len(".bin")], src_dict)
    tgt_data = data_utils.load_indexed_dataset(str(files[2])[: -len(".bin")], tgt_dict)
    strip = {tgt_dict.eos()}
    sources = [[src_dict[i] for i in src_data[n].tolist() if i != src_dict.eos()] for n in range(len(src_data))]
    references = [tgt_dict.string(tgt_data[n], None, escape_unk=True, extra_symbols_to_ignore=strip)
                  for n in range(len(tgt_data))]
    return sources, references


# --------------------------------------------------------------------------------------------
# the evaluation tool's hook


def evaluate_model(args: argparse.Namespace, label: str, model_dir: str, workdir: Path) -> dict:
    """The figures of ``pet_fairseq.evaluation.compare.evaluate_model`` for a CTranslate2 model directory.

    The subset is read here (with fairseq); the model is run in a torch-free subprocess
    (:mod:`pet_fairseq.export.ct2_worker`) with the same beam, batch size, length limits, threads,
    warm-up and repeats; de-BPE, detokenization and BLEU use the evaluation tool's functions.
    """
    from pet_fairseq.evaluation.bleu import read_lines
    from pet_fairseq.evaluation.jobs import file_stem, make_job, score, write_texts
    from pet_fairseq.evaluation.postprocess import build_bpe_decoder, build_detokenizer
    from pet_fairseq.evaluation.runner import run_decoder

    model_dir = Path(model_dir)
    if torch.device(args.device).type != "cpu":
        raise EvaluationError(f"{model_dir}: CTranslate2 models are evaluated on the CPU only (got --device {args.device})")
    try:
        require_ctranslate2()
    except ExportError as exc:
        raise EvaluationError(str(exc)) from exc
    info = export_info(model_dir)
    langs = resolve_languages({"cfg": {"task": info}}, args.data_bin, args.source_lang, args.target_lang)
    try:
        check_vocabularies(model_dir, args.data_bin, *langs)
    except ExportError as exc:
        raise EvaluationError(str(exc)) from exc
    sources, references = read_subset(args.data_bin, args.subset, *langs)
    stem = file_stem(label)
    job = make_job(args, label, model_dir.resolve(), langs, workdir)
    job.update(source_path=str(workdir / f"{stem}.source.txt"), hyp_path=str(workdir / f"{stem}.hyp.raw.txt"))
    Path(job["source_path"]).write_text("".join(" ".join(s) + "\n" for s in sources), encoding="utf-8")
    logger.info("%s: decoding %s (%s-%s) with CTranslate2 in a subprocess", label, args.subset, *langs)
    command = [sys.executable, "-P", str(Path(ct2_worker.__file__).resolve()), "--job"]
    result = run_decoder(job, workdir / f"{stem}.job.json", command=command)
    unbpe = build_bpe_decoder(args.bpe, args.bpe_codes, args.sentencepiece_model)
    hyps = [unbpe(h) for h in read_lines(job["hyp_path"])]
    files = write_texts(job, hyps, [unbpe(r) for r in references], build_detokenizer(args.tokenizer, langs[1]))
    size = ct2_worker.directory_bytes(model_dir)
    memory = {"checkpoint_bytes": size, "inference_checkpoint_bytes": size, **result["memory"]}
    return {"memory": memory, "speed": result["speed"], "sentences": result["sentences"], "files": files,
            "bleu": score(files), "backend": "ctranslate2"}
