"""``python -m pet_fairseq.preprocessing {iwslt14,wmt14,multi30k,recipe,summary} ...``.

The ``data_prep/prepare-*.sh`` scripts call the dataset subcommand (text steps), then
``fairseq-preprocess`` (binarization into ``OUT/data-bin``), then ``recipe`` (the data-bin's
``preprocessing.json``) and ``summary``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from pet_fairseq.core.cli import command
from pet_fairseq.preprocessing.bpe import SENTENCEPIECE, SUBWORD_NMT
from pet_fairseq.preprocessing.files import PrepError
from pet_fairseq.preprocessing.pipeline import RECIPES, SPLITS, Options, run_recipe
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, write_recipe


def _add_common(parser: argparse.ArgumentParser, dataset: str) -> None:
    recipe = RECIPES[dataset]
    parser.add_argument("--src", default=recipe.default_src, help=f"source language (default {recipe.default_src})")
    parser.add_argument("--tgt", default=recipe.default_tgt, help=f"target language (default {recipe.default_tgt})")
    parser.add_argument("--out", type=Path, required=True,
                        help="output root: tok/, bpe/ and (after fairseq-preprocess) data-bin/ go here")
    parser.add_argument("--force", action="store_true",
                        help="reuse a non-empty --out (its tmp/ tok/ bpe/ data-bin/ are replaced)")
    parser.add_argument("--workers", type=int, default=2, help="processes for tokenization/BPE (default 2)")
    parser.add_argument("--bpe", choices=[SUBWORD_NMT, SENTENCEPIECE], default=SUBWORD_NMT,
                        help=f"subword method (default {SUBWORD_NMT})")
    parser.add_argument("--bpe-merges", type=int, default=None,
                        help=f"subword-nmt joint merges (default {recipe.merges})")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"sentencepiece vocabulary size (default {recipe.vocab_size})")
    parser.add_argument("--spm-model-type", choices=["bpe", "unigram"], default="bpe",
                        help="sentencepiece model type (default bpe)")
    parser.add_argument("--bpe-codes", type=Path, default=None,
                        help="apply these subword-nmt codes (or sentencepiece .model) instead of learning them")
    parser.add_argument("--max-train-lines", type=int, default=None,
                        help="use only the first N training pairs (quick tests)")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=recipe.lowercase,
                        help=f"lowercase after tokenizing (default {'on' if recipe.lowercase else 'off'})")
    parser.add_argument("--clean-ratio", type=float, default=recipe.ratio,
                        help=f"clean-corpus-n length ratio for train (default {recipe.ratio})")
    parser.add_argument("--max-len", type=int, default=recipe.max_len,
                        help=f"clean-corpus-n maximum tokens per side for train (default {recipe.max_len})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pet-prepare",
        description="Offline, Python re-implementation of fairseq's translation data preparation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    iwslt = sub.add_parser("iwslt14", help=RECIPES["iwslt14"].description,
                           description=RECIPES["iwslt14"].description)
    _add_common(iwslt, "iwslt14")
    iwslt.add_argument("--raw", type=Path, default=None,
                       help="local de-en.tgz or its extracted folder (default: download it)")
    wmt = sub.add_parser("wmt14", help=RECIPES["wmt14"].description, description=RECIPES["wmt14"].description)
    _add_common(wmt, "wmt14")
    wmt.add_argument("--raw", type=Path, default=None,
                     help="folder whose NAME.en/NAME.de pairs are all training data (newstest2013/14 excluded)")
    wmt.add_argument("--train", type=Path, action="append", default=[], metavar="PREFIX",
                     help="training corpus PREFIX.en/PREFIX.de (repeatable)")
    wmt.add_argument("--train-src", type=Path, action="append", default=[], metavar="FILE",
                     help="training source file (repeatable, paired with --train-tgt in order)")
    wmt.add_argument("--train-tgt", type=Path, action="append", default=[], metavar="FILE")
    wmt.add_argument("--valid", type=Path, default=None, metavar="PREFIX",
                     help="validation PREFIX (default newstest2013 in --raw, its parent or ../shared/data)")
    wmt.add_argument("--test", type=Path, default=None, metavar="PREFIX",
                     help="test PREFIX, plain or .sgm (default newstest2014, found like --valid)")
    m30k = sub.add_parser("multi30k", help=RECIPES["multi30k"].description,
                          description=RECIPES["multi30k"].description)
    _add_common(m30k, "multi30k")
    m30k.add_argument("--raw", type=Path, default=None,
                      help="folder with train/val/test.{de,en} (default ../shared/data/multi30k-de-en, "
                           "else download)")
    summary = sub.add_parser("summary", help="print the summary of a finished preparation run")
    summary.add_argument("out", type=Path, help="the --out folder of the run")
    recipe = sub.add_parser("recipe", help=f"write OUT/data-bin/{RECIPE_FILE} (how to prepare new text) and copy "
                                           "the subword model next to it, after fairseq-preprocess")
    recipe.add_argument("out", type=Path, help="the --out folder of the run")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into :class:`Options` (pairs --train-src/--train-tgt)."""
    train: list[tuple[Path, Path]] = []
    if args.command == "wmt14":
        if len(args.train_src) != len(args.train_tgt):
            raise PrepError("--train-src and --train-tgt must be given the same number of times (one per corpus).")
        train = [(Path(f"{p}.{args.src}"), Path(f"{p}.{args.tgt}")) for p in args.train]
        train += list(zip(args.train_src, args.train_tgt))
    return Options(
        dataset=args.command, src=args.src, tgt=args.tgt, out=args.out, workers=args.workers, force=args.force,
        bpe=args.bpe, bpe_merges=args.bpe_merges, vocab_size=args.vocab_size, bpe_codes=args.bpe_codes,
        spm_model_type=args.spm_model_type, max_train_lines=args.max_train_lines, lowercase=args.lowercase,
        clean_ratio=args.clean_ratio, max_len=args.max_len, raw=args.raw, train=train,
        valid=getattr(args, "valid", None), test=getattr(args, "test", None),
    )


def dictionary_size(path: Path) -> int | None:
    """Entries of a fairseq dict.L.txt plus its 4 special symbols; None when absent."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle) + 4


def format_summary(out: Path) -> str:
    """Human-readable summary of ``out/prep_stats.json`` and the binarized dictionaries."""
    stats_path = out / "prep_stats.json"
    if not stats_path.is_file():
        raise PrepError(f"{stats_path} not found: run the preparation into {out} first.")
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    src, tgt = stats["src"], stats["tgt"]
    lines = [f"== {stats['dataset']} {src}->{tgt} summary ==", f"source: {stats['origin']}"]
    clean = stats["clean"]
    lines.append(f"cleaning (train only{', after BPE' if clean['after_bpe'] else ''}): "
                 f"1-{clean['max_len']} tokens, ratio {clean['ratio']}; lowercase: {stats['lowercase']}")
    for split in SPLITS:
        entry = stats["splits"][split]
        text = f"{split:>5}: {entry['pairs']:>9,} pairs"
        if "input_pairs" in entry:
            text += f" (from {entry['input_pairs']:,} input pairs"
            if "input_pairs_available" in entry:
                text += f" of {entry['input_pairs_available']:,} available, --max-train-lines"
            text += ")"
        if "clean" in entry:
            dropped = entry["clean"]["dropped"]
            detail = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items())) or "none"
            text += f"; dropped by cleaning: {sum(dropped.values()):,} ({detail})"
        if entry.get("empty_pairs_kept"):
            text += f"; {entry['empty_pairs_kept']} pairs with an empty side kept"
        if "note" in entry:
            text += f"; {entry['note']}"
        lines.append(text)
    bpe = stats["bpe"]
    size = f"{bpe['merges']:,} merges" if "merges" in bpe else f"{bpe['vocab_size']:,} pieces"
    lines.append(f"subwords: {bpe['method']}, {size}{' (given)' if bpe['given'] else ''}: {bpe['model']}")
    data_bin = Path(stats["paths"]["data_bin"])
    sizes = {lang: dictionary_size(data_bin / f"dict.{lang}.txt") for lang in (src, tgt)}
    if all(v is not None for v in sizes.values()):
        lines.append(f"fairseq dictionary (joined): {sizes[src]:,} types incl. 4 specials "
                     f"(dict.{src}.txt, dict.{tgt}.txt)")
    else:
        lines.append(f"no dictionaries in {data_bin} yet (fairseq-preprocess not run)")
    lines += [f"tokenized text: {stats['paths']['tok']}", f"subword text:   {stats['paths']['bpe']}",
              f"data-bin:       {data_bin}"]
    if (data_bin / RECIPE_FILE).is_file():
        lines.append(f"recipe:         {data_bin / RECIPE_FILE} (python -m pet_fairseq.translate reads it)")
    return "\n".join(lines)


@command("prepare")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "summary":
        print(format_summary(args.out))
        return 0
    if args.command == "recipe":
        print(f"recipe: {write_recipe(args.out)}")
        return 0
    run_recipe(options_from_args(args))
    print(f"text steps done: {args.out / 'bpe'}")
    return 0
