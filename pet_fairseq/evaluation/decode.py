"""The per-model decoding process: ``python -m pet_fairseq.evaluation.decode --job JOB.json``.

One process per model, so that its peak resident memory (``ru_maxrss``) is that model's alone.
It decodes as ``fairseq-generate`` does (:mod:`pet_fairseq.core.decode`: ``load_model_ensemble_and_task``
with ``data`` overridden, ``task.build_generator``, ``task.get_batch_iterator`` over the subset,
``task.inference_step``), then times the decoding (:func:`pet_fairseq.core.speed.measure_speed`).
It writes de-BPE'd hypotheses (tokenized and detokenized), the references, and a result JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from pet_fairseq.core.decode import Decoder, load_decoder, make_batches, translate_subset
from pet_fairseq.core.errors import InputError
from pet_fairseq.core.postprocess import build_bpe_decoder, build_detokenizer
from pet_fairseq.core.speed import measure_speed
from pet_fairseq.evaluation import memory
from pet_fairseq.evaluation.jobs import write_texts

logger = logging.getLogger("pet_fairseq.evaluation.decode")


def decode_pass(decoder: Decoder, batches: list[dict]) -> tuple[int, int]:
    """Translate every batch once; returns (sentences, generated target tokens incl. EOS)."""
    sentences = tokens = 0
    for sample in batches:
        hypos = decoder.translate(sample)
        sentences += len(hypos)
        tokens += sum(len(h[0]["tokens"]) for h in hypos)
    if decoder.device.type == "cuda":
        torch.cuda.synchronize(decoder.device)
    return sentences, tokens


def run_job(job: dict) -> dict:
    """Decode the subset for BLEU, then time it; return every figure of this model."""
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before_load = memory.current_rss_bytes()
    decoder = load_decoder(job)
    unbpe = build_bpe_decoder(job["bpe"], job.get("bpe_codes"), job.get("sentencepiece_model"))
    runaway: list[int] = []
    hyps, refs = translate_subset(decoder, make_batches(decoder, job), unbpe, runaway)
    files = write_texts(job, hyps, refs, build_detokenizer(job["tokenizer"], job["target_lang"]))
    timed_batches = make_batches(decoder, job, job.get("max_sentences"))
    logger.info("timing %d sentences: %d warm-up batch, %d repeats", sum(len(b["id"]) for b in timed_batches),
                job["warmup"], job["repeats"])
    speed = measure_speed(lambda: decode_pass(decoder, timed_batches), job["repeats"], job["warmup"],
                          warmup_fn=lambda: decode_pass(decoder, timed_batches[:1]))
    return {
        "sentences": len(hyps),
        "runaway": sorted(runaway),
        "files": files,
        "threads": torch.get_num_threads(),
        "memory": {
            "unique_parameters": memory.unique_parameter_count(decoder.model),
            "registered_parameters": memory.registered_parameters(decoder.model),
            "rss_before_load_bytes": rss_before_load,
            "peak_rss_bytes": memory.peak_rss_bytes(),
            "peak_gpu_bytes": memory.peak_gpu_bytes(device),
        },
        "speed": speed.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run one job file; write ``{"status": "ok", ...}`` or ``{"status": "failed", "error": ...}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="JSON job file written by pet_fairseq.evaluation.runner")
    job_path = Path(parser.parse_args(argv).job)
    job = json.loads(job_path.read_text())
    logging.basicConfig(level=logging.INFO, format=f"[decode {job['label']}] %(message)s", stream=sys.stderr,
                        force=True)
    result_path = Path(job["result_path"])
    try:
        result = {"status": "ok", **run_job(job)}
    except InputError as exc:
        result = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # reported in the model's row; the traceback goes to the log
        logger.exception("decoding failed")
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".strip().splitlines()[0]}
    result_path.write_text(json.dumps(result, indent=2))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
