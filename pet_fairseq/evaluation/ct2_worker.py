"""Decoding with a CTranslate2 model, without torch: the evaluation tool's per-model process for CT2.

    python -P pet_fairseq/evaluation/ct2_worker.py --job JOB.json
    python -P pet_fairseq/evaluation/ct2_worker.py --serve MODEL_DIR --threads N   (JSON lines on stdin)

A deployed CTranslate2 model needs neither torch nor fairseq, so this process imports neither
(importing them costs ~300 MB of resident memory, which would swamp the model's own figure). It is
therefore run as a *file* with ``python -P`` (Python >= 3.11: do not put this folder on
``sys.path``, where the package's module files would shadow top-level modules of the same name),
not with ``-m``, which would import the ``pet_fairseq`` package (and with it torch and fairseq) first.
It is the CTranslate2 counterpart of :mod:`pet_fairseq.evaluation.decode`.

The parent (:func:`pet_fairseq.evaluation.ct2_model.evaluate_model`) reads the binarized subset with
fairseq and writes the source tokens; this process translates them (beam search, the same beam,
batch size, length limits and threads as the fairseq models), times the decoding with
:func:`pet_fairseq.evaluation.speed.measure_speed` (warm-up, then the median of the repeats), and
writes the raw hypotheses and a result JSON. De-BPE, detokenization and BLEU happen in the parent
with the evaluation tool's own functions, exactly as for fairseq models.
"""

import argparse
import importlib.util
import json
import logging
import resource
import struct
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("pet_fairseq.evaluation.ct2_worker")

_HERE = Path(__file__).resolve().parent
#: CTranslate2's ``DataType`` ids in model.bin (``include/ctranslate2/types.h``): name, bytes per element
_DTYPES = {0: ("float32", 4), 1: ("int8", 1), 2: ("int16", 2), 3: ("int32", 4), 4: ("float16", 2), 5: ("bfloat16", 2)}


def _speed_module():
    """``pet_fairseq.evaluation.speed`` (stdlib only), loaded from its file so the package is not imported."""
    loaded = sys.modules.get("pet_fairseq.evaluation.speed")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("_pet_speed", _HERE / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


def read_model_variables(model_bin: Path) -> List[Tuple[str, Tuple[int, ...], str]]:
    """(name, shape, dtype) of every variable stored in a CTranslate2 ``model.bin`` (aliases excluded)."""
    variables = []
    with open(model_bin, "rb") as f:

        def unpack(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(unpack("H")).rstrip(b"\0").decode("utf-8")

        version = unpack("I")
        if not 5 <= version <= 6:
            raise ValueError(f"{model_bin}: unsupported CTranslate2 binary version {version}")
        string()  # spec name
        unpack("I")  # spec revision
        for _ in range(unpack("I")):
            name = string()
            shape = tuple(unpack("I") for _ in range(unpack("B")))
            dtype = _DTYPES[unpack("B")][0]
            f.seek(unpack("I"), 1)
            variables.append((name, shape, dtype))
    return variables


def count_parameters(model_dir: Path) -> int:
    """Weights stored in a CTranslate2 model: elements of its variables, tied ones once.

    The converter stores variables that are equal (tied embeddings, and the layers of an unrolled
    student that are unchanged copies of one another) once, as aliases, so this is what the file
    really holds. Quantization scales (``*_scale``), scalar settings and the sinusoidal position
    tables (fairseq computes those; they are not parameters) are left out, so an int8 model counts
    the same parameters as its float32 original.
    """
    total = 0
    for name, shape, _ in read_model_variables(Path(model_dir) / "model.bin"):
        if name.endswith(("_scale", "position_encodings/encodings")) or not shape:
            continue
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel
    return total


def directory_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what deploying the model directory copies)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (as :func:`pet_fairseq.evaluation.memory.peak_rss_bytes`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def make_batches(lengths: Sequence[int], batch_size: Optional[int], max_tokens: Optional[int]) -> List[List[int]]:
    """Sentence indices grouped like fairseq: sorted by source length, then ``batch_size`` sentences
    per batch, or as many as fit ``max_tokens`` padded source tokens (EOS included)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: List[List[int]] = []
    current: List[int] = []
    for index in order:
        candidate = current + [index]
        too_many = batch_size is not None and len(candidate) > batch_size
        too_long = max_tokens is not None and len(candidate) * (max(lengths[i] for i in candidate) + 1) > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            candidate = [index]
        current = candidate
    if current:
        batches.append(current)
    return batches


def max_decoding_length(batch_lengths: Sequence[int], max_len_a: float, max_len_b: int) -> int:
    """fairseq's per-batch limit ``a * src_len + b`` (``src_len`` = longest source incl. EOS, capped at 1023
    like fairseq's default positions). Both count tokens before EOS: at the limit fairseq appends EOS,
    CTranslate2 just stops (same tokens; only the score of such a hypothesis differs)."""
    return min(int(max_len_a * (max(batch_lengths) + 1) + max_len_b), 1023)


def search(translator, source: List[List[str]], beam: int, max_len: int, min_len: int = 1, use_vmap: bool = False,
           scores: bool = False, length_penalty: float = 1.0):
    """CTranslate2 beam search of one batch, as every decoder here runs it: the best hypothesis only, sources
    never truncated (fairseq does not truncate them), ``min_len``-``max_len`` tokens before EOS, scores
    normalised by length ** ``length_penalty`` (fairseq's ``--lenpen``).

    A translator loaded with ``parallel_batches`` P > 1 (:func:`load_translator`) gets the batch cut into P
    length-sorted parts of at most ``ceil(len(source) / P)`` sentences, which its P workers decode at once.
    The hypotheses are those of the whole batch, except with ``use_vmap``: a shortlist's candidate set is
    the union over what is decoded together, so each part gets a smaller one of its own.
    """
    return translator.translate_batch(source, beam_size=beam, num_hypotheses=1, max_input_length=0,
                                      min_decoding_length=min_len, max_decoding_length=max_len, use_vmap=use_vmap,
                                      return_scores=scores, length_penalty=length_penalty,
                                      max_batch_size=part_size(len(source), translator))


def part_size(sentences: int, translator) -> int:
    """``max_batch_size`` that splits ``sentences`` evenly over the translator's workers (0: no split)."""
    workers = translator.num_translators
    return 0 if workers == 1 else -(-sentences // workers)


def check_parallel_batches(parallel_batches: int, threads: int) -> None:
    """A ``ValueError`` unless ``parallel_batches`` workers can share ``threads`` evenly (at least one each)."""
    if parallel_batches < 1 or threads % parallel_batches:
        raise ValueError(f"{parallel_batches} parallel batches cannot share {threads} threads evenly: choose a "
                         "divisor of the thread count (each parallel batch needs at least one thread)")


def translate(translator, sources: List[List[str]], batches: List[List[int]], beam: int, max_len_a: float,
              max_len_b: int, use_vmap: bool = False) -> Dict[int, Tuple[List[str], float]]:
    """Beam search over ``batches``; returns ``{index: (tokens, score)}`` (score: length-normalized log-prob).

    ``use_vmap``: restrict each batch's output vocabulary to the model's stored shortlist (``vmap.txt``).
    """
    out = {}
    for batch in batches:
        limit = max_decoding_length([len(sources[i]) for i in batch], max_len_a, max_len_b)
        results = search(translator, [sources[i] for i in batch], beam, limit, use_vmap=use_vmap, scores=True)
        for index, result in zip(batch, results):
            out[index] = (result.hypotheses[0], float(result.scores[0]))
    return out


def load_translator(model_dir: str, threads: int, device: str = "cpu", compute_type: str = "default",
                    parallel_batches: int = 1):
    """A ``ctranslate2.Translator`` on ``threads`` CPU threads, as ``parallel_batches`` workers of
    ``threads / parallel_batches`` threads each (CTranslate2's ``inter_threads`` and ``intra_threads``).

    One worker with every thread parallelises inside each operation; several workers decode parts of a
    batch side by side (:func:`search` splits it), one thread each. On this project's 2-core machine the
    second way was faster at every batch size, by far for a single sentence
    (docs/results/decode-speed-paper-sizes.md).
    """
    check_parallel_batches(parallel_batches, threads)
    import ctranslate2

    return ctranslate2.Translator(model_dir, device=device, compute_type=compute_type, inter_threads=parallel_batches,
                                  intra_threads=threads // parallel_batches)


def run_job(job: dict) -> dict:
    """Translate the source file for BLEU, then time it; return every figure (like the fairseq decoder)."""
    import psutil

    speed = _speed_module()
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
    figures = speed.measure_speed(decode_pass, job["repeats"], job["warmup"],
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
    :func:`load_translator`.
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
    mode.add_argument("--job", help="JSON job file written by pet_fairseq.evaluation.ct2_model")
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
