"""Compare a teacher with its students on one binarized test set: BLEU, memory, decode speed.

    python -m pet_fairseq.evaluation.compare --data-bin data-bin/iwslt14.tokenized.de-en \\
        --bpe subword_nmt --bpe-codes code --labels teacher,pet \\
        checkpoints/teacher/checkpoint_best.pt checkpoints/pet/checkpoint_best.pt

The first checkpoint is the reference: every ratio and BLEU delta is relative to it. Each model is
decoded in its own subprocess (same beam, batch size and threads). A model that fails gets a
``FAILED`` row and the exit status is 1; the others are still reported. Models of two directions are refused
before any decoding (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

from pet_fairseq.core.arguments import add_decoding_args, add_device_args, add_language_args, resolve_batch_size, resolve_threads
from pet_fairseq.core.checkpoint import read_checkpoint, save_inference_state
from pet_fairseq.core.checks import check_dictionaries, check_subset
from pet_fairseq.core.cli import command
from pet_fairseq.core.ctranslate2.decoding import check_parallel_batches
from pet_fairseq.core.errors import InputError
from pet_fairseq.evaluation import report
from pet_fairseq.evaluation.environment import describe_environment
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.jobs import file_stem, make_job, model_languages, score
from pet_fairseq.evaluation.ratios import add_ratios
from pet_fairseq.evaluation.runner import run_decoder

logger = logging.getLogger("pet_fairseq.evaluation.compare")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (fairseq-generate's names where they overlap)."""
    p = argparse.ArgumentParser(prog="pet-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="fairseq checkpoints or CTranslate2 model directories (python -m pet_fairseq.export "
                   "ctranslate2); the first is the reference")
    p.add_argument("--data-bin", required=True, type=Path, help="fairseq-preprocess output directory")
    p.add_argument("--subset", default="test", help="binarized subset to translate (default: test)")
    add_language_args(p)
    add_decoding_args(p, max_tokens=True)
    add_device_args(p, parallel_aliases=("--ct2-parallel-batches",))
    p.add_argument("--repeats", type=int, default=3,
                   help="timed passes per model; the median is reported (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches before timing (default: 1)")
    p.add_argument("--max-sentences", type=int, help="time only the first N sentences (BLEU uses the whole subset)")
    p.add_argument("--bpe", choices=("subword_nmt", "sentencepiece"), help="BPE to remove from the output")
    p.add_argument("--bpe-codes", help="subword-nmt codes file (with --bpe subword_nmt)")
    p.add_argument("--sentencepiece-model", help="sentencepiece model (with --bpe sentencepiece)")
    p.add_argument("--tokenizer", choices=("moses", "none"), default="moses",
                   help="how the target side was tokenized; moses (default): detokenize with sacremoses for sacreBLEU")
    p.add_argument("--labels", help="comma-separated names, one per model (default: from the paths)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/compare"),
                   help="hypotheses, report.{md,json,png} (default: runs/compare)")
    p.add_argument("--keep-inference-checkpoints", action="store_true",
                   help="keep the stripped checkpoints in OUT_DIR/checkpoints instead of a temporary directory")
    return p


def default_labels(paths: list[str]) -> list[str]:
    """Names from the paths: the file stem, or the folder for ``checkpoint*.pt``; made unique."""
    labels = []
    for path in map(Path, paths):
        name = path.parent.name if path.stem.startswith("checkpoint") and path.parent.name else path.stem
        labels.append(name)
    return [f"{name}-{labels[:i].count(name) + 1}" if labels.count(name) > 1 else name
            for i, name in enumerate(labels)]


def parse_labels(args: argparse.Namespace) -> list[str]:
    """``--labels`` split on commas, or :func:`default_labels`; their count must match the models."""
    if not args.labels:
        return default_labels(args.models)
    labels = [label.strip() for label in args.labels.split(",")]
    if len(labels) != len(args.models) or len(set(labels)) != len(labels) or not all(labels):
        raise EvaluationError(f"--labels needs {len(args.models)} distinct non-empty names, got {args.labels!r}")
    return labels


def evaluate_model(args: argparse.Namespace, label: str, path: str, workdir: Path, ckpt_dir: Path,
                   seen: dict | None = None) -> dict:
    """Check, strip, decode and score one checkpoint; raises :class:`EvaluationError` or
    :class:`~pet_fairseq.core.errors.InputError` on bad input.

    ``seen``: what the models before it left (their direction, which this one must translate too,
    :func:`~pet_fairseq.evaluation.jobs.model_languages`); one dict per comparison.

    A CTranslate2 model directory (holding ``model.bin``, see ``python -m pet_fairseq.export``) is
    decoded by :func:`pet_fairseq.evaluation.ct2_backend.evaluate_model` with the same settings.
    """
    from pet_fairseq.core.ctranslate2.model_dir import is_model_dir
    from pet_fairseq.evaluation.ct2_backend import evaluate_model as evaluate_ctranslate2

    if is_model_dir(path):
        return evaluate_ctranslate2(args, label, path, workdir, seen)
    state = read_checkpoint(path)
    langs = model_languages(args, path, state, {} if seen is None else seen)
    check_subset(args.data_bin, args.subset, *langs)
    check_dictionaries(state, args.data_bin, *langs)
    stripped = ckpt_dir / f"{file_stem(label)}.inference.pt"
    memory = {"checkpoint_bytes": Path(path).stat().st_size,
              "inference_checkpoint_bytes": save_inference_state(state, stripped)}
    del state
    logger.info("%s: decoding %s (%s-%s) in a subprocess", label, args.subset, *langs)
    result = run_decoder(make_job(args, label, stripped, langs, workdir), workdir / f"{file_stem(label)}.job.json")
    memory.update(result["memory"])
    return {"memory": memory, "speed": result["speed"], "sentences": result["sentences"],
            "runaway": len(result.get("runaway", [])), "files": result["files"], "bleu": score(result["files"])}


def model_pair(args: argparse.Namespace, path: str) -> tuple[str, str]:
    """The direction ``path`` would be compared in (:func:`~pet_fairseq.evaluation.jobs.model_languages`),
    read without decoding."""
    from pet_fairseq.core.ctranslate2.model_dir import export_info, is_model_dir

    state = {"cfg": {"task": export_info(Path(path))}} if is_model_dir(path) else read_checkpoint(path)
    return model_languages(args, path, state, {})


def check_one_direction(args: argparse.Namespace, labels: list[str]) -> None:
    """Every readable model translates one direction, checked before any model is decoded; raises
    :class:`EvaluationError` naming each direction's models. A model that cannot be read is left to its
    ``FAILED`` row."""
    found: dict[tuple[str, str], list[str]] = {}
    for label, path in zip(labels, args.models):
        try:
            found.setdefault(model_pair(args, path), []).append(label)
        except (EvaluationError, InputError):
            continue
    if len(found) > 1:
        listing = "; ".join(f"{src}->{tgt}: {', '.join(names)}" for (src, tgt), names in found.items())
        raise EvaluationError(f"the models translate {len(found)} directions ({listing}); the models of one "
                              "comparison must translate one direction: compare each direction separately")


def evaluate_all(args: argparse.Namespace, labels: list[str]) -> list[dict]:
    """One row per model, in order; a failure becomes a row with ``status: failed`` and the reason."""
    rows: list[dict] = []
    seen: dict = {}  # the direction of the first model, which every other must share
    with tempfile.TemporaryDirectory(prefix="pet-compare-") as tmp:
        workdir = Path(tmp)
        ckpt_dir = args.out_dir / "checkpoints" if args.keep_inference_checkpoints else workdir
        for index, (label, path) in enumerate(zip(labels, args.models), start=1):
            logger.info("[%d/%d] %s: %s", index, len(labels), label, path)
            row = {"label": label, "checkpoint": str(path), "status": "ok", "error": None}
            try:
                row.update(evaluate_model(args, label, path, workdir, ckpt_dir, seen))
            except (EvaluationError, InputError) as exc:
                logger.error("%s FAILED: %s", label, exc)
                row.update(status="failed", error=str(exc))
            except Exception as exc:  # an unexpected bug must not lose the other models' rows
                logger.exception("%s FAILED unexpectedly", label)
                row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
    add_ratios(rows)
    return rows


def settings(args: argparse.Namespace) -> dict:
    """The options that shape the figures, for the JSON report."""
    keys = ("data_bin", "subset", "source_lang", "target_lang", "beam", "max_len_a", "max_len_b", "batch_size",
            "max_tokens", "threads", "parallel_batches", "repeats", "warmup", "max_sentences", "bpe", "tokenizer", "device")
    return {key: str(v) if isinstance(v := getattr(args, key), Path) else v for key in keys}


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject option combinations that cannot work before any model is loaded."""
    resolve_batch_size(args)
    args.threads = resolve_threads(args.threads)
    if not args.data_bin.is_dir():
        parser.error(f"--data-bin {args.data_bin} is not a directory")
    if args.bpe == "subword_nmt" and not args.bpe_codes:
        parser.error("--bpe subword_nmt needs --bpe-codes")
    if args.bpe == "sentencepiece" and not args.sentencepiece_model:
        parser.error("--bpe sentencepiece needs --sentencepiece-model")
    for option, value, what in (("--bpe-codes", args.bpe_codes, "subword-nmt codes file"),
                                ("--sentencepiece-model", args.sentencepiece_model, "sentencepiece model")):
        if value and not Path(value).is_file():
            parser.error(f"{option} {value} is not a file; pass the {what} the data was prepared with")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"--out-dir {args.out_dir} is a file; pass a folder (it is created if missing)")
    above = next((p for p in args.out_dir.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        parser.error(f"--out-dir {args.out_dir} lies under {above}, which is a file; pass a folder (it is created "
                     "if missing)")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    if min(args.repeats, args.threads, args.beam) < 1 or args.warmup < 0:
        parser.error("--repeats, --threads and --beam must be >= 1, --warmup >= 0")
    try:
        check_parallel_batches(args.parallel_batches, args.threads)
    except ValueError as exc:
        parser.error(f"--parallel-batches {args.parallel_batches} with --threads {args.threads}: {exc}")


@command("compare")
def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the table; write report.json and report.png to ``--out-dir``.

    Exits 1 when a model's row failed (its reason is in the table), 2 on a bad option or models of two directions.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_args(parser, args)
    try:
        labels = parse_labels(args)
        check_one_direction(args, labels)
    except EvaluationError as exc:
        parser.error(str(exc))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = evaluate_all(args, labels)
    table = report.markdown_table(rows)
    print(table)
    for line in report.signatures(rows):
        print(line)
    env = describe_environment(args.device, args.threads)
    report.write_json(args.out_dir / "report.json", {"environment": env, "settings": settings(args),
                                                     "reference": labels[0], "models": rows})
    (args.out_dir / "report.md").write_text(table + "\n", encoding="utf-8")
    if report.plot(args.out_dir / "report.png", rows):
        logger.info("wrote %s", args.out_dir / "report.png")
    logger.info("wrote %s and %s", args.out_dir / "report.json", args.out_dir / "report.md")
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        reasons = "; ".join(f"{row['label']}: {row['error']}" for row in failed)
        print(f"error: {len(failed)} of {len(rows)} models failed (their rows say FAILED): {reasons}", file=sys.stderr,
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
