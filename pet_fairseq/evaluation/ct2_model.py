"""CTranslate2 model directories: recognise them, check them against a data-bin, evaluate them.

A model directory is what ``python -m pet_fairseq.export ctranslate2`` writes: ``model.bin``, the
vocabularies and :data:`EXPORT_INFO` (where the model came from, its language pair). This module
reads such directories; it does not convert anything. :func:`evaluate_model` is the comparison
tool's backend for them: the subset is read here, the model runs in the torch-free
:mod:`pet_fairseq.evaluation.ct2_worker` process, and de-BPE, detokenization and BLEU are the
fairseq models' own.

``ctranslate2`` is an optional extra (``pip install -e .[ctranslate2]``); :func:`require_ctranslate2`
says how to install it.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from pet_fairseq.evaluation import ct2_worker
from pet_fairseq.evaluation.checks import resolve_languages
from pet_fairseq.evaluation.errors import EvaluationError

logger = logging.getLogger("pet_fairseq.evaluation.ct2_model")

#: written next to model.bin: where the model came from and its language pair
EXPORT_INFO = "pet_export.json"
#: the vocabulary-mapping file CTranslate2's converter stores in a model directory
VMAP = "vmap.txt"


def require_ctranslate2():
    """The ``ctranslate2`` module, or an :class:`EvaluationError` saying how to install it."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise EvaluationError("the ctranslate2 package is not installed: pip install -e '.[ctranslate2]' "
                              "(or pip install 'ctranslate2>=4.0')") from exc
    return ctranslate2


def is_model_dir(path: "str | os.PathLike") -> bool:
    """Whether ``path`` is a CTranslate2 model directory (a folder holding ``model.bin``)."""
    return Path(path).is_dir() and (Path(path) / "model.bin").is_file()


def has_shortlist(model_dir: "str | os.PathLike") -> bool:
    """Whether the model stores a vocabulary shortlist (``vmap.txt``, CTranslate2's ``use_vmap``).

    A model exported with a shortlist is decoded with it by every tool of this package: the
    shortlist is part of the deployed model, and its BLEU is the one to report.
    """
    return (Path(model_dir) / VMAP).is_file()


def export_info(model_dir: "str | os.PathLike") -> Dict[str, Any]:
    """What the export recorded about a model directory (empty for models converted elsewhere)."""
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
    """Raise :class:`EvaluationError` if the model's vocabularies are not the data-bin's dictionaries."""
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
        raise EvaluationError("vocabulary mismatch between the CTranslate2 model and the data-bin: "
                              + "; ".join(problems))


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
    (:mod:`pet_fairseq.evaluation.ct2_worker`) with the same beam, batch size, length limits, threads,
    warm-up and repeats (each batch cut into ``--parallel-batches`` parts decoded side by side);
    de-BPE, detokenization and BLEU use the evaluation tool's functions.
    """
    from pet_fairseq.evaluation.bleu import read_lines
    from pet_fairseq.evaluation.jobs import file_stem, make_job, score, write_texts
    from pet_fairseq.evaluation.postprocess import build_bpe_decoder, build_detokenizer
    from pet_fairseq.evaluation.runner import run_decoder

    model_dir = Path(model_dir)
    if torch.device(args.device).type != "cpu":
        raise EvaluationError(f"{model_dir}: CTranslate2 models are evaluated on the CPU only (got --device {args.device})")
    require_ctranslate2()
    info = export_info(model_dir)
    langs = resolve_languages({"cfg": {"task": info}}, args.data_bin, args.source_lang, args.target_lang)
    check_vocabularies(model_dir, args.data_bin, *langs)
    sources, references = read_subset(args.data_bin, args.subset, *langs)
    stem = file_stem(label)
    job = make_job(args, label, model_dir.resolve(), langs, workdir)
    job.update(source_path=str(workdir / f"{stem}.source.txt"), hyp_path=str(workdir / f"{stem}.hyp.raw.txt"),
               use_vmap=has_shortlist(model_dir), parallel_batches=args.parallel_batches)
    Path(job["source_path"]).write_text("".join(" ".join(s) + "\n" for s in sources), encoding="utf-8")
    logger.info("%s: decoding %s (%s-%s) with CTranslate2 in a subprocess%s", label, args.subset, *langs,
                ", with the model's vocabulary shortlist" if job["use_vmap"] else "")
    command = [sys.executable, "-P", str(Path(ct2_worker.__file__).resolve()), "--job"]
    result = run_decoder(job, workdir / f"{stem}.job.json", command=command)
    unbpe = build_bpe_decoder(args.bpe, args.bpe_codes, args.sentencepiece_model)
    hyps = [unbpe(h) for h in read_lines(job["hyp_path"])]
    files = write_texts(job, hyps, [unbpe(r) for r in references], build_detokenizer(args.tokenizer, langs[1]))
    size = ct2_worker.directory_bytes(model_dir)
    memory = {"checkpoint_bytes": size, "inference_checkpoint_bytes": size, **result["memory"]}
    return {"memory": memory, "speed": result["speed"], "sentences": result["sentences"], "files": files,
            "bleu": score(files), "backend": "ctranslate2+shortlist" if job["use_vmap"] else "ctranslate2"}
