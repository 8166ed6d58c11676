"""Decoding with a CTranslate2 model, without torch: the evaluation tool's per-model process for CT2.

    python -P pet_fairseq/evaluation/ct2_worker.py --job JOB.json
    python -P pet_fairseq/evaluation/ct2_worker.py --serve MODEL_DIR --threads N   (JSON lines on stdin)

A deployed CTranslate2 model needs neither torch nor fairseq, so this process imports neither
(importing them costs ~300 MB of resident memory, which would swamp the model's own figure). It is
therefore run as a *file* with ``python -P`` (Python >= 3.11: do not put this folder on
``sys.path``, where the package's module files would shadow top-level modules of the same name),
not with ``-m``, which would import the ``pet_fairseq`` package (and with it torch and fairseq) first.
Run so, it registers ``pet_fairseq`` as its bare folder (:func:`_bare_package`), so that its imports
of the core's torch-free modules (:mod:`pet_fairseq.core.ctranslate2.decoding`,
:mod:`pet_fairseq.core.ctranslate2.model_dir`, :mod:`pet_fairseq.core.speed`) run those modules and
not ``pet_fairseq/__init__.py``. It is the CTranslate2 counterpart of :mod:`pet_fairseq.evaluation.decode`.

The parent (:func:`pet_fairseq.evaluation.ct2_backend.evaluate_model`) reads the binarized subset with
fairseq and writes the source tokens; this process translates them (beam search, the same beam,
batch size, length limits and threads as the fairseq models), times the decoding with
:func:`pet_fairseq.core.speed.measure_speed` (warm-up, then the median of the repeats), and
writes the raw hypotheses and a result JSON. De-BPE, detokenization and BLEU happen in the parent
with the evaluation tool's own functions, exactly as for fairseq models.
"""

import argparse
import json
import logging
import resource
import sys
import types
from pathlib import Path
from typing import List, Optional, Tuple


def _bare_package() -> None:
    """Make ``pet_fairseq`` importable as its bare folder when this file runs as a script.

    ``pet_fairseq/__init__.py`` registers the plugin with fairseq, which imports torch. Registered as
    a module with only a ``__path__``, the package's subpackages and modules import as usual (their
    own ``__init__.py`` included) while the plugin's registration never runs. Imported normally (the
    package is loaded already), this does nothing.
    """
    if "pet_fairseq" not in sys.modules:
        package = types.ModuleType("pet_fairseq")
        package.__path__ = [str(Path(__file__).resolve().parents[1])]
        sys.modules["pet_fairseq"] = package


_bare_package()

from pet_fairseq.core.ctranslate2.decoding import load_translator, make_batches, search, translate  # noqa: E402
from pet_fairseq.core.ctranslate2.model_dir import count_parameters  # noqa: E402
from pet_fairseq.core.speed import measure_speed  # noqa: E402

logger = logging.getLogger("pet_fairseq.evaluation.ct2_worker")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (as :func:`pet_fairseq.evaluation.memory.peak_rss_bytes`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_job(job: dict) -> dict:
    """Translate the source file for BLEU, then time it; return every figure (like the fairseq decoder)."""
    import psutil

    sources = [line.split() for line in Path(job["source_path"]).read_text(encoding="utf-8").split("\n")[:-1]]
    rss_before_load = int(psutil.Process().memory_info().rss)
    translator = load_translator(job["checkpoint"], job["threads"], job.get("ct2_device", "cpu"),
                                 job.get("compute_type", "default"), job.get("parallel_batches", 1))
    lengths = [len(s) for s in sources]
    beam, a, b = job["beam"], job["max_len_a"], job["max_len_b"]
    batches = make_batches(lengths, job["batch_size"], job["max_tokens"])
    use_vmap = bool(job.get("use_vmap"))
    hyps = translate(translator, sources, batches, beam, a, b, use_vmap)
    Path(job["hyp_path"]).write_text("".join(" ".join(hyps[i][0]) + "\n" for i in range(len(sources))),
                                     encoding="utf-8")
    limit = job.get("max_sentences")
    timed = list(range(len(sources) if limit is None else min(limit, len(sources))))
    timed_batches = make_batches([lengths[i] for i in timed], job["batch_size"], job["max_tokens"])

    def decode_pass(subset=timed_batches) -> Tuple[int, int]:
        result = translate(translator, sources, subset, beam, a, b, use_vmap)
        return len(result), sum(len(tokens) + 1 for tokens, _ in result.values())  # + EOS, as fairseq counts

    logger.info("timing %d sentences: %d warm-up batch, %d repeats", len(timed), job["warmup"], job["repeats"])
    figures = measure_speed(decode_pass, job["repeats"], job["warmup"],
                            warmup_fn=lambda: decode_pass(timed_batches[:1]))
    return {
        "sentences": len(sources),
        "threads": job["threads"],
        "parallel_batches": job.get("parallel_batches", 1),
        "vocab_shortlist": use_vmap,
        "memory": {
            "unique_parameters": count_parameters(Path(job["checkpoint"])),
            "registered_parameters": None,
            "rss_before_load_bytes": rss_before_load,
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_gpu_bytes": None,
        },
        "speed": figures.to_dict(),
    }


def serve(model_dir: str, threads: int, requests=sys.stdin, replies=sys.stdout, parallel_batches: int = 1) -> None:
    """Translate batches on request: one JSON line in, one JSON line out, until the input ends.

    A request is ``{"source": [[token, ...], ...], "beam": B, "min_len": M, "max_len": N,
    "use_vmap": bool}``; the reply ``{"hypotheses": [[token, ...], ...]}`` (best hypothesis of each
    sentence, no EOS) or ``{"error": "..."}``. ``{"ready": true}`` is written once the model is loaded.
    The speed benchmark runs one such process per CTranslate2 model, so CTranslate2's threads never
    share a process with torch's (each library brings its own OpenMP runtime; in one process their
    idle threads slowed torch's decoding: docs/results/decode-implementation.md). ``parallel_batches``: see
    :func:`pet_fairseq.core.ctranslate2.decoding.load_translator`.
    """
    translator = load_translator(model_dir, threads, parallel_batches=parallel_batches)
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in requests:
        try:
            request = json.loads(line)
            results = search(translator, request["source"], request["beam"], request["max_len"], request["min_len"],
                             request["use_vmap"])
            reply = {"hypotheses": [result.hypotheses[0] for result in results]}
        except Exception as exc:  # reported to the parent, which raises it there
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: Optional[List[str]] = None) -> int:
    """Run one job file, writing ``{"status": "ok", ...}`` or ``{"status": "failed", "error": ...}``; or serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--job", help="JSON job file written by pet_fairseq.evaluation.ct2_backend")
    mode.add_argument("--serve", metavar="MODEL_DIR", help="translate JSON-line requests from stdin (see serve)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads with --serve (default: 1)")
    parser.add_argument("--parallel-batches", type=int, default=1,
                        help="with --serve: decode each batch as this many parts side by side, each on "
                        "threads / N threads (default: 1)")
    args = parser.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
        serve(args.serve, args.threads, parallel_batches=args.parallel_batches)
        return 0
    job = json.loads(Path(args.job).read_text())
    logging.basicConfig(level=logging.INFO, format=f"[decode {job['label']}] %(message)s", stream=sys.stderr,
                        force=True)
    try:
        result = {"status": "ok", **run_job(job)}
    except Exception as exc:  # reported in the model's row; the traceback goes to the log
        logger.exception("decoding failed")
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".strip().splitlines()[0]}
    Path(job["result_path"]).write_text(json.dumps(result, indent=2))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
