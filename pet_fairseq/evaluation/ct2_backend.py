"""The comparison tool's backend for CTranslate2 model directories: the same figures as for a checkpoint.

A model directory (``python -m pet_fairseq.export ctranslate2``) given to
``python -m pet_fairseq.evaluation.compare`` is checked against the data-bin here
(:mod:`pet_fairseq.core.ctranslate2.model_dir`), its subset is read with fairseq
(:mod:`pet_fairseq.core.ctranslate2.subset`), the model runs in the torch-free
:mod:`pet_fairseq.evaluation.ct2_worker` process, and de-BPE, detokenization and BLEU are the
fairseq models' own (:mod:`pet_fairseq.evaluation.jobs`).
"""

import argparse
import logging
import sys
from pathlib import Path

import torch

from pet_fairseq.core.bleu import read_lines
from pet_fairseq.core.ctranslate2.model_dir import (
    check_vocabularies,
    directory_bytes,
    export_info,
    has_shortlist,
    require_ctranslate2,
)
from pet_fairseq.core.ctranslate2.subset import read_subset
from pet_fairseq.core.postprocess import build_bpe_decoder, build_detokenizer
from pet_fairseq.evaluation import ct2_worker
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.jobs import file_stem, make_job, model_languages, score, write_texts
from pet_fairseq.evaluation.runner import run_decoder

logger = logging.getLogger("pet_fairseq.evaluation.ct2_backend")


def evaluate_model(args: argparse.Namespace, label: str, model_dir: str, workdir: Path,
                   seen: dict | None = None) -> dict:
    """The figures of ``pet_fairseq.evaluation.compare.evaluate_model`` for a CTranslate2 model directory.

    The subset is read here (with fairseq); the model is run in a torch-free subprocess
    (:mod:`pet_fairseq.evaluation.ct2_worker`) with the same beam, batch size, length limits, threads,
    warm-up and repeats (each batch cut into ``--parallel-batches`` parts decoded side by side);
    de-BPE, detokenization and BLEU are those of the fairseq models.
    """
    model_dir = Path(model_dir)
    if torch.device(args.device).type != "cpu":
        raise EvaluationError(f"{model_dir}: CTranslate2 models are evaluated on the CPU only (got --device {args.device})")
    require_ctranslate2()
    info = export_info(model_dir)
    langs = model_languages(args, model_dir, {"cfg": {"task": info}}, {} if seen is None else seen)
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
    size = directory_bytes(model_dir)
    memory = {"checkpoint_bytes": size, "inference_checkpoint_bytes": size, **result["memory"]}
    return {"memory": memory, "speed": result["speed"], "sentences": result["sentences"], "files": files,
            "bleu": score(files), "backend": "ctranslate2+shortlist" if job["use_vmap"] else "ctranslate2"}
