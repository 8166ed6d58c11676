"""Conversion to CTranslate2: unroll a student, convert it with CTranslate2's fairseq converter.

``python -m pet_fairseq.export ctranslate2`` and sequence-level KD's CTranslate2 teacher
(:mod:`pet_fairseq.seqkd.engines`) convert with :func:`convert`, so both write the same model
directory (with :data:`~pet_fairseq.core.ctranslate2.model_dir.EXPORT_INFO`, the record of where the
model came from).

``ctranslate2`` is an optional extra (``pip install -e .[ctranslate2]``); it is imported only when
a function here needs it. Its converter imports fairseq and builds the model from the checkpoint's
configuration, so it only knows standard fairseq architectures: PET students are unrolled first
(:mod:`pet_fairseq.core.unroll`). Reading and checking the model directories written here is
:mod:`pet_fairseq.core.ctranslate2.model_dir`'s, decoding them :mod:`pet_fairseq.core.ctranslate2.decoding`'s.
"""

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from pet_fairseq.core.checks import dictionary_problems, resolve_languages
from pet_fairseq.core.ctranslate2.model_dir import EXPORT_INFO, directory_bytes, require_ctranslate2
from pet_fairseq.core.ctranslate2.shortlist_record import check_shortlist
from pet_fairseq.core.direction import check_direction
from pet_fairseq.core.unroll import (
    PLAIN_FAIRSEQ_NOTE,
    ExportError,
    check_output,
    export_errors,
    generate_command,
    model_dictionary_dir,
    read_student,
    save_atomic,
    unroll_state,
    verify,
)

logger = logging.getLogger("pet_fairseq.export")

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


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
            keep_unrolled: "str | os.PathLike | None" = None,
            vocab_shortlist: "str | os.PathLike | None" = None) -> Path:
    """Unroll ``student`` and convert it to a CTranslate2 model in ``out_dir``; returns ``out_dir``.

    ``data_bin`` holds the ``dict.{lang}.txt`` dictionaries (default: the model's training data-bin).
    ``vocab_shortlist``: a vocabulary-mapping file (:mod:`pet_fairseq.export.shortlist`) stored in the
    model as ``vmap.txt``; decoding uses it when asked to (``use_vmap``). It is checked first
    (:func:`~pet_fairseq.core.ctranslate2.shortlist_record.check_shortlist`): its record must name the
    model's language pair and dictionaries.
    """
    with export_errors():
        ctranslate2 = require_ctranslate2()
    from ctranslate2.converters import FairseqConverter

    student, out_dir = Path(student), Path(out_dir)
    if vocab_shortlist is not None and not Path(vocab_shortlist).is_file():
        raise ExportError(f"the vocabulary shortlist {vocab_shortlist} does not exist; write one with "
                          "python -m pet_fairseq.export shortlist")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} exists and is not empty; pass --force to overwrite it")
    if keep_unrolled is not None:
        check_output(student, Path(keep_unrolled), force, flag="--keep-unrolled")
    state = read_student(student)
    unrolled, summary = unroll_state(state, student)
    if check:
        verify(state, unrolled)
    del state
    data_bin = Path(data_bin) if data_bin else model_dictionary_dir(unrolled["cfg"])
    if data_bin is None or not data_bin.is_dir():
        raise ExportError(f"the dictionaries' folder {data_bin or '(not recorded in the checkpoint)'} does not exist; "
                          "pass --data-bin with the data-bin the model was trained on")
    task = unrolled["cfg"].get("task") or {}
    check_direction(str(student), (task.get("source_lang"), task.get("target_lang")), source_lang, target_lang,
                    error=ExportError)
    with export_errors():  # the options, else the checkpoint's task, else the data-bin's only language pair
        src, tgt = resolve_languages(unrolled, data_bin, source_lang, target_lang)
    missing = [f"dict.{lang}.txt" for lang in (src, tgt) if not (data_bin / f"dict.{lang}.txt").is_file()]
    if missing:
        raise ExportError(f"dictionaries {', '.join(missing)} not found in {data_bin}; "
                          "pass --data-bin with the data-bin the model was trained on")
    problems = dictionary_problems(unrolled, data_bin, src, tgt)
    if problems:
        raise ExportError(f"--data-bin {data_bin} does not hold the dictionaries {student} was trained with: "
                          f"{'; '.join(problems)}; pass --data-bin with the data-bin the model was trained on")
    shortlist_record = check_shortlist(vocab_shortlist, data_bin, src, tgt) if vocab_shortlist else None
    with tempfile.TemporaryDirectory(prefix="pet-export-") as tmp:
        model_path = Path(tmp) / "unrolled.args.pt"
        _converter_input(unrolled, model_path)
        if keep_unrolled:
            save_atomic(unrolled, Path(keep_unrolled))
            logger.info("wrote the unrolled checkpoint %s; %s: %s", keep_unrolled, PLAIN_FAIRSEQ_NOTE,
                        generate_command(Path(keep_unrolled), unrolled["cfg"]))
        converter = FairseqConverter(str(model_path), str(data_bin.resolve()), source_lang=src, target_lang=tgt)
        try:
            converter.convert(str(out_dir), vmap=str(vocab_shortlist) if vocab_shortlist else None,
                              quantization=quantization, force=force)
        except (ValueError, NotImplementedError) as exc:  # the converter's "not supported" messages
            raise ExportError(f"CTranslate2 cannot convert {student}: {' '.join(str(exc).split())}") from exc
    info = {"source": str(student.resolve()), "source_arch": summary.source_arch, "source_lang": src,
            "target_lang": tgt, "data_bin": str(data_bin.resolve()), "quantization": quantization or "float32",
            "ctranslate2_version": ctranslate2.__version__, "encoder_plan": summary.encoder_plan,
            "decoder_plan": summary.decoder_plan, "student_unique_parameters": summary.unique_parameters,
            "unrolled_parameters": summary.unrolled_parameters,
            "vocab_shortlist": str(Path(vocab_shortlist).resolve()) if vocab_shortlist else None,
            "vocab_shortlist_record": shortlist_record}
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("%s", summary.describe())
    logger.info("wrote CTranslate2 model (%s) to %s (%.2f MB)", info["quantization"], out_dir,
                directory_bytes(out_dir) / 2**20)
    return out_dir

