"""Decode time against input length, models side by side.

    python -m pet_fairseq.evaluation.length_benchmark --data-bin DATA_BIN --labels softmax,linear \\
        --lengths 25,100,400 softmax/checkpoint_best.pt linear/checkpoint_best.pt

Inputs of each length L are built from the source side of a binarized subset (or, with
``--source-text``, from a BPE'd text file, one sentence per line): consecutive sentences are
concatenated (their EOS dropped) and cut to exactly L - 1 tokens + EOS, so every input of a length
has the same size and a batch has no padding. Each model decodes the same inputs with fairseq's
SequenceGenerator (beam search) in this one process
(:class:`~pet_fairseq.evaluation.translators.FairseqTranslator`); after ``--warmup`` untimed passes
the ``--repeats`` timed passes are interleaved model by model
(:func:`~pet_fairseq.core.speed.measure_side_by_side`), and the median pass time is reported.

Output length. By default it is *forced*: ``min_len = max_len = round(R · L) - 1`` tokens plus EOS
(``--output-length-ratio R``, default 1.0), so every model generates exactly as many tokens and a
student that would stop early (an untrained one says "a a ." and stops) is timed on the same work:
the figure is the cost of the decoder at that output length, not of what it chose to say.
``--free-length`` lets each model stop at EOS within ``--max-len-a · L + --max-len-b``.

The first model is the reference: ``speed ×`` is its time per sentence over the model's (>1 = faster).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pet_fairseq.core.arguments import OwnDefault, add_decoding_args, add_device_args, add_language_args, resolve_threads
from pet_fairseq.core.checkpoint import read_checkpoint
from pet_fairseq.core.checks import check_dictionaries, check_subset, resolve_languages, task_config
from pet_fairseq.core.cli import command
from pet_fairseq.core.direction import check_direction
from pet_fairseq.core.errors import ConfigError
from pet_fairseq.core.speed import measure_side_by_side
from pet_fairseq.evaluation.compare import parse_labels
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.report import write_benchmark_json
from pet_fairseq.evaluation.translators import FairseqTranslator, OutputLength, decode_pass

logger = logging.getLogger("pet_fairseq.evaluation.length_benchmark")


#: the decoding defaults this benchmark needs, and why (shown in --help)
OWN_DEFAULTS = {
    "batch_size": OwnDefault(8, "inputs run to 400 tokens (--lengths), so batches stay small; with the default "
                                "--inputs 8, each length is one batch"),
    "max_len_a": OwnDefault(1.2, "with --free-length the limit grows with the input, whose --lengths run to 400 "
                                 "tokens; a fixed 200 would cut the longest outputs"),
    "max_len_b": OwnDefault(10, "see --max-len-a"),
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (fairseq-generate's names where they overlap; the shared groups of
    :mod:`pet_fairseq.core.arguments`, with :data:`OWN_DEFAULTS`)."""
    p = argparse.ArgumentParser(prog="pet-length-benchmark",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL", help="fairseq checkpoints; the first is the reference")
    p.add_argument("--data-bin", required=True, type=Path, help="fairseq-preprocess output (dictionaries, subset)")
    p.add_argument("--subset", default="test", help="binarized subset whose source side is concatenated (default: test)")
    p.add_argument("--source-text", type=Path,
                   help="take the source sentences from this BPE'd text file (one per line) instead of --subset")
    add_language_args(p)
    p.add_argument("--lengths", default="25,100,400", help="source lengths in tokens, EOS included (default: 25,100,400)")
    p.add_argument("--inputs", type=int, default=8, help="inputs per length (default: 8)")
    add_decoding_args(p, own=OWN_DEFAULTS,
                      note="--max-len-a and --max-len-b apply with --free-length only; otherwise the output length is "
                           "forced (--output-length-ratio).")
    p.add_argument("--output-length-ratio", type=float, default=1.0,
                   help="forced output length = round(R * source length), EOS included (default: 1.0)")
    p.add_argument("--free-length", action="store_true",
                   help="do not force the output length: stop at EOS or at --max-len-a * L + --max-len-b")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per model and length; median reported (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over the first batch first (default: 1)")
    add_device_args(p, parallel_batches=False)
    p.add_argument("--labels", help="comma-separated names, one per model (default: from the paths)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return p


def parse_lengths(text: str) -> list[int]:
    """``"25,100,400"`` -> [25, 100, 400]; a clear error for anything else."""
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 2:
        raise ValueError(f"--lengths {text!r}: give comma-separated source lengths >= 2 (EOS included), e.g. 25,100,400")
    return lengths


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject options that cannot work before any model is loaded."""
    try:
        args.length_list = parse_lengths(args.lengths)
        args.threads = resolve_threads(args.threads)
    except (ValueError, ConfigError) as exc:
        parser.error(str(exc))
    if not args.data_bin.is_dir():
        parser.error(f"--data-bin {args.data_bin} is not a directory")
    if args.source_text is not None and not args.source_text.is_file():
        parser.error(f"--source-text {args.source_text} does not exist")
    for model in args.models:
        if not Path(model).is_file():
            parser.error(f"checkpoint {model} does not exist")
    if min(args.inputs, args.batch_size, args.beam, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--inputs, --batch-size, --beam, --repeats and --threads must be >= 1, --warmup >= 0")
    if not args.free_length and not args.output_length_ratio > 0:
        parser.error(f"--output-length-ratio {args.output_length_ratio}: must be > 0 (or use --free-length)")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")


# --------------------------------------------------------------------------------------------
# inputs


def make_inputs(sentences: list[torch.Tensor], length: int, count: int, eos: int,
                start: int = 0) -> tuple[list[torch.Tensor], int]:
    """``count`` inputs of exactly ``length`` tokens (the last one EOS) from consecutive ``sentences``.

    Sentences (without EOS) are taken in order from index ``start``, wrapping around at the end,
    concatenated and cut; each input starts at a sentence boundary. Returns the inputs and the index
    of the next unused sentence.
    """
    sentences = [s for s in sentences if len(s) > 0]
    if not sentences:
        raise EvaluationError("no non-empty source sentences to build inputs from")
    inputs, index = [], start % len(sentences)
    for _ in range(count):
        pieces, total = [], 0
        while total < length - 1:
            pieces.append(sentences[index])
            total += len(sentences[index])
            index = (index + 1) % len(sentences)
        tokens = torch.cat(pieces)[: length - 1]
        inputs.append(torch.cat([tokens, tokens.new_tensor([eos])]))
    return inputs, index


def subset_sentences(task: Any, subset: str) -> list[torch.Tensor]:
    """Source sentences of a binarized subset, in file order, without their EOS."""
    task.load_dataset(subset)
    src = task.dataset(subset).src
    eos = task.source_dictionary.eos()
    return [item[:-1] if len(item) and item[-1] == eos else item for item in (src[i].long() for i in range(len(src)))]


def text_sentences(path: Path, dictionary: Any) -> list[torch.Tensor]:
    """Lines of a BPE'd text file encoded with the model's source dictionary (no EOS)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    encoded = [dictionary.encode_line(line, add_if_not_exist=False, append_eos=False).long() for line in lines]
    tokens = sum(len(e) for e in encoded)
    unknown = sum(int(e.eq(dictionary.unk()).sum()) for e in encoded)
    if tokens and unknown / tokens > 0.05:
        logger.warning("%s: %.0f%% of the tokens are not in the dictionary; is it BPE'd like the training data?",
                       path, 100 * unknown / tokens)
    return encoded


# --------------------------------------------------------------------------------------------
# models and decoding


def load_models(args: argparse.Namespace, labels: list[str]) -> tuple[list[FairseqTranslator], tuple[str, str]]:
    """Check and load every checkpoint with the data-bin's dictionaries; the language pair of the first."""
    from fairseq import checkpoint_utils

    import pet_fairseq  # noqa: F401  (registers pet_transformer and safe checkpoint loading)

    loaded, langs = [], None
    for label, path in zip(labels, args.models):
        state = read_checkpoint(path)
        task = task_config(state)
        check_direction(str(path), (task.get("source_lang"), task.get("target_lang")), args.source_lang,
                        args.target_lang, error=EvaluationError)
        pair = resolve_languages(state, args.data_bin, args.source_lang, args.target_lang)
        langs = langs or pair
        if pair != langs:
            raise EvaluationError(f"{path} translates {pair[0]}-{pair[1]}, the first model {langs[0]}-{langs[1]}")
        if args.source_text is None:
            check_subset(args.data_bin, args.subset, *langs)
        check_dictionaries(state, args.data_bin, *langs)
        del state
        overrides = {"data": str(args.data_bin), "source_lang": langs[0], "target_lang": langs[1]}
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides=overrides)
        loaded.append(FairseqTranslator(label, models[0], task, args.device))
        logger.info("%s: %s (%s)", label, path, type(models[0]).__name__)
    return loaded, langs


def output_limits(args: argparse.Namespace, length: int) -> OutputLength:
    """The output length limits for source length ``length``: forced to ``round(R · L)`` tokens (EOS
    included), or free up to ``--max-len-a · L + --max-len-b``."""
    if args.free_length:
        return OutputLength(min_len=1, max_len_a=args.max_len_a, max_len_b=args.max_len_b)
    return OutputLength.forced(max(2, round(args.output_length_ratio * length)))


def check_positions(entry: FairseqTranslator, length: int, limits: OutputLength) -> None:
    """A clear error when the inputs or outputs do not fit the model's positional embeddings."""
    max_src, max_tgt = entry.model.max_positions()
    longest_output = limits.max_tokens(length) + 1
    if length > max_src:
        raise EvaluationError(f"{entry.label}: source length {length} exceeds the model's {max_src} source positions")
    if longest_output > max_tgt - 1:
        raise EvaluationError(f"{entry.label}: output length up to {longest_output} exceeds the model's "
                              f"{max_tgt} target positions; lower --lengths or --output-length-ratio")


def benchmark(args: argparse.Namespace, models: list[FairseqTranslator],
              inputs: dict[int, list[torch.Tensor]]) -> list[dict]:
    """One result per (length, model): warm-up per model, then repeats interleaved model by model."""
    results = []
    steps = len(inputs) * len(models) * (args.repeats + args.warmup)
    with tqdm(total=steps, desc="decode", unit="pass", file=sys.stderr, mininterval=2.0) as bar:
        for length, items in inputs.items():
            limits = output_limits(args, length)
            for entry in models:
                check_positions(entry, length, limits)
            chunks = [[x.tolist() for x in items[i : i + args.batch_size]]
                      for i in range(0, len(items), args.batch_size)]
            prepared = [[entry.prepare(chunk) for chunk in chunks] for entry in models]
            speeds = measure_side_by_side(
                [lambda e=entry, b=batches: decode_pass(e, b, args.beam, limits)
                 for entry, batches in zip(models, prepared)],
                args.repeats, args.warmup, on_pass=bar.update,
                warmup_fns=[lambda e=entry, b=batches: decode_pass(e, b[:1], args.beam, limits)
                            for entry, batches in zip(models, prepared)],
            )
            for entry, path, speed in zip(models, args.models, speeds):
                results.append({
                    "length": length, "label": entry.label, "checkpoint": str(path), "sentences": speed.sentences,
                    "output_tokens_per_sentence": speed.tokens / speed.sentences, "seconds": speed.seconds,
                    "median_seconds": speed.median_seconds, "seconds_per_sentence": 1 / speed.sentences_per_second,
                    "tokens_per_second": speed.tokens_per_second, "min_len": limits.min_len,
                    "max_len_a": limits.max_len_a, "max_len_b": limits.max_len_b,
                })
            logger.info("length %d: %s", length, ", ".join(
                f"{r['label']} {1000 * r['seconds_per_sentence']:.1f} ms/sent" for r in results[-len(models):]))
    add_ratios(results)
    return results


def add_ratios(results: list[dict]) -> None:
    """``speed_ratio`` = reference time per sentence / this one (>1 = faster), per length; reference = first model."""
    reference: dict[int, float] = {}
    for row in results:
        reference.setdefault(row["length"], row["seconds_per_sentence"])
        row["speed_ratio"] = reference[row["length"]] / row["seconds_per_sentence"]


def markdown_table(results: list[dict]) -> str:
    """One row per (source length, model)."""
    lines = ["| source tokens | model | output tokens/sent | ms/sentence | tok/s | speed × (vs first) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['length']} | {r['label']} | {r['output_tokens_per_sentence']:.1f} | "
                     f"{1000 * r['seconds_per_sentence']:.1f} | {r['tokens_per_second']:.0f} | {r['speed_ratio']:.2f} |")
    return "\n".join(lines)


def settings(args: argparse.Namespace) -> dict:
    keys = ("data_bin", "subset", "source_text", "lengths", "inputs", "batch_size", "beam", "output_length_ratio",
            "free_length", "max_len_a", "max_len_b", "repeats", "warmup", "threads", "device")
    return {key: str(v) if isinstance(v := getattr(args, key), Path) else v for key in keys}


def run(args: argparse.Namespace) -> list[dict]:
    """Load the models, build the inputs and time them; the results of :func:`benchmark`."""
    torch.set_num_threads(args.threads)
    labels = parse_labels(args)
    models, langs = load_models(args, labels)
    dictionary = models[0].task.source_dictionary
    if args.source_text is not None:
        sentences = text_sentences(args.source_text, dictionary)
        origin = str(args.source_text)
    else:
        sentences = subset_sentences(models[0].task, args.subset)
        origin = f"{args.data_bin}/{args.subset}.{langs[0]}"
    inputs, start = {}, 0
    for length in args.length_list:
        inputs[length], start = make_inputs(sentences, length, args.inputs, dictionary.eos(), start)
    logger.info("%d inputs per length from %d sentences of %s; output length %s", args.inputs, len(sentences), origin,
                "free" if args.free_length else f"forced to {args.output_length_ratio:g} x source length")
    return benchmark(args, models, inputs)


@command("length-benchmark")
def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table; with ``--json``, write every figure there too."""
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_args(parser, args)
    results = run(args)
    print(markdown_table(results))
    if args.json:
        write_benchmark_json(args.json, args.device, args.threads,
                             {"settings": settings(args), "reference": results[0]["label"], "results": results})
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
