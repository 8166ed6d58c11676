"""Export a trained student for deployment.

    python -m pet_fairseq.export unroll STUDENT.pt OUT.pt
    python -m pet_fairseq.export shortlist OUT.vmap --data-bin DIR [--subset train]
    python -m pet_fairseq.export ctranslate2 STUDENT.pt OUTDIR --quantization int8 [--data-bin DIR]
                                             [--vocab-shortlist OUT.vmap]
    python -m pet_fairseq.export translate OUTDIR --data-bin DIR [--subset test] [--bpe ...]
    python -m pet_fairseq.export translate OUTDIR --input test.bpe.de [--output hyps.txt]

``unroll`` writes a standard fairseq ``transformer`` checkpoint (no ``--user-dir`` needed) that
computes the same function as the student (plain ``fairseq-generate`` needs
``--required-batch-size-multiple 1`` with it, or fairseq 0.12 drops a last batch not a multiple of 8,
fairseq issue #5036); ``ctranslate2`` unrolls, then converts with CTranslate2's fairseq converter;
``shortlist`` counts a bitext into a lexical vocabulary shortlist (and a record ``OUT.vmap.json`` of
its language pair and dictionaries) that ``ctranslate2 --vocab-shortlist`` stores in the model after
checking that record against the model; ``translate`` decodes a binarized subset (and reports BLEU)
or a text file with a CTranslate2 model (beam 5 by default; with the model's shortlist when it has one).
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from pet_fairseq.core.arguments import add_decoding_args, add_device_args, add_language_args, resolve_threads
from pet_fairseq.core.cli import command
from pet_fairseq.core.errors import ExportError
from pet_fairseq.core.unroll import export_errors
from pet_fairseq.export.shortlist import DEFAULT_FREQUENT, DEFAULT_PER_TOKEN


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)

    unroll = sub.add_parser("unroll", help="write a standard fairseq transformer checkpoint")
    unroll.add_argument("student", type=Path, help="checkpoint of a PET student (or a fairseq transformer)")
    unroll.add_argument("out", type=Path, help="where to write the standard checkpoint (.pt)")
    unroll.add_argument("--no-check", action="store_true",
                        help="skip comparing both models on a random batch before writing")
    unroll.add_argument("--force", action="store_true", help="overwrite an existing OUT")

    sl = sub.add_parser("shortlist", help="write a lexical vocabulary shortlist (CTranslate2 vmap) from a bitext")
    sl.add_argument("out", type=Path, help="vocabulary-mapping file to write")
    sl.add_argument("--data-bin", type=Path, required=True,
                    help="the model's data-bin: dict.{src,tgt}.txt, and the binarized --subset counted by default")
    sl.add_argument("--subset", default="train", help="binarized subset to count (default: train)")
    sl.add_argument("--source-text", type=Path, help="count this BPE'd source text instead of --subset")
    sl.add_argument("--target-text", type=Path, help="the target side of --source-text")
    add_language_args(sl, required=True)
    sl.add_argument("--frequent", type=int, default=DEFAULT_FREQUENT,
                    help="most frequent target tokens always allowed (default: %(default)s)")
    sl.add_argument("--per-token", type=int, default=DEFAULT_PER_TOKEN,
                    help="target tokens allowed per source token, by Dice association (default: %(default)s)")
    sl.add_argument("--force", action="store_true", help="overwrite OUT")

    ct2 = sub.add_parser("ctranslate2", help="unroll, then convert to a CTranslate2 model directory")
    ct2.add_argument("student", type=Path, help="checkpoint of a PET student (or a fairseq transformer)")
    ct2.add_argument("out_dir", type=Path, help="CTranslate2 model directory to create")
    ct2.add_argument("--quantization", choices=("float32",) + tuple(q for q in _quantizations() if q != "float32"),
                     default="float32", help="weight type of the converted model (default: float32)")
    ct2.add_argument("--data-bin", type=Path, help="folder with dict.{src,tgt}.txt (default: the model's training data)")
    add_language_args(ct2)
    ct2.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    ct2.add_argument("--keep-unrolled", type=Path, metavar="PT", help="also write the unrolled fairseq checkpoint")
    ct2.add_argument("--no-check", action="store_true", help="skip the unrolled-vs-student check")
    ct2.add_argument("--vocab-shortlist", type=Path, metavar="VMAP",
                     help="store this vocabulary shortlist (python -m pet_fairseq.export shortlist) in the model; "
                          "refused unless its record VMAP.json names the model's language pair and dictionaries")

    tr = sub.add_parser("translate", help="decode with a CTranslate2 model directory")
    tr.add_argument("model_dir", type=Path, help="CTranslate2 model directory (holding model.bin)")
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-bin", type=Path, help="binarized data; decode --subset and report BLEU")
    source.add_argument("--input", type=Path, help="text file, one sentence per line, tokenized and BPE'd like the training data")
    tr.add_argument("--subset", default="test", help="binarized subset (with --data-bin; default: test)")
    tr.add_argument("--output", type=Path, help="write the (de-BPE'd, detokenized) hypotheses here (default: stdout)")
    add_language_args(tr)
    add_decoding_args(tr)
    add_device_args(tr, device=False)
    tr.add_argument("--compute-type", default="default", help="CTranslate2 compute type (default: as converted)")
    tr.add_argument("--no-shortlist", action="store_true",
                    help="decode over the whole target vocabulary even if the model stores a shortlist")
    tr.add_argument("--bpe", choices=("subword_nmt", "sentencepiece"), help="BPE to remove from the output")
    tr.add_argument("--bpe-codes", help="subword-nmt codes file (with --bpe subword_nmt)")
    tr.add_argument("--sentencepiece-model", help="sentencepiece model (with --bpe sentencepiece)")
    tr.add_argument("--tokenizer", choices=("moses", "none"), default="moses",
                    help="moses (default): detokenize the output with sacremoses, as the evaluation tool does")
    return p


def _quantizations():
    from pet_fairseq.core.ctranslate2.convert import QUANTIZATIONS

    return QUANTIZATIONS


def read_input(path: Path) -> List[str]:
    """The lines of ``--input``; undecodable UTF-8 is replaced (with a warning per line), never fatal."""
    if not path.is_file():
        raise ExportError(f"--input {path} is not a file; pass a text file, one tokenized and BPE'd sentence per line")
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", errors="replace"))
            print(f"warning: {path} line {number} is not valid UTF-8; undecodable bytes were replaced by U+FFFD",
                  file=sys.stderr)
    return lines


def translate_command(args: argparse.Namespace) -> int:
    """The ``translate`` subcommand: hypotheses to --output/stdout, BLEU to stderr for a subset."""
    from pet_fairseq.core import bleu
    from pet_fairseq.core.checks import resolve_languages
    from pet_fairseq.core.ctranslate2 import decoding
    from pet_fairseq.core.ctranslate2.model_dir import (
        check_vocabularies,
        export_info,
        has_shortlist,
        is_model_dir,
        require_ctranslate2,
    )
    from pet_fairseq.core.ctranslate2.subset import read_subset
    from pet_fairseq.core.direction import check_direction
    from pet_fairseq.core.postprocess import build_bpe_decoder, build_detokenizer

    with export_errors():
        require_ctranslate2()
    if not is_model_dir(args.model_dir):
        raise ExportError(f"{args.model_dir} is not a CTranslate2 model directory (no model.bin)")
    info = export_info(args.model_dir)
    check_direction(str(args.model_dir), (info.get("source_lang"), info.get("target_lang")), args.source_lang,
                    args.target_lang, error=ExportError)
    references = None
    if args.data_bin:
        with export_errors():
            src, tgt = resolve_languages({"cfg": {"task": info}}, args.data_bin, args.source_lang, args.target_lang)
            check_vocabularies(args.model_dir, args.data_bin, src, tgt)
            sources, references = read_subset(args.data_bin, args.subset, src, tgt)
    else:
        tgt = args.target_lang or info.get("target_lang") or "en"
        sources = [line.split() for line in read_input(args.input)]
    threads = resolve_threads(args.threads)
    try:
        translator = decoding.load_translator(str(args.model_dir), threads, compute_type=args.compute_type,
                                              parallel_batches=args.parallel_batches)
    except ValueError as exc:
        raise ExportError(f"--parallel-batches {args.parallel_batches} with --threads {threads}: {exc}") from exc
    batches = decoding.make_batches([len(s) for s in sources], args.batch_size, None)
    use_vmap = has_shortlist(args.model_dir) and not args.no_shortlist
    results = decoding.translate(translator, sources, batches, args.beam, args.max_len_a, args.max_len_b,
                                 use_vmap=use_vmap)
    unbpe = build_bpe_decoder(args.bpe, args.bpe_codes, args.sentencepiece_model)
    detok = build_detokenizer(args.tokenizer, tgt)
    hyps = [unbpe(" ".join(results[i][0])) for i in range(len(sources))]
    lines = [detok(h) for h in hyps]
    if args.output:
        bleu.write_lines(args.output, lines)
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    if references is not None:
        refs = [unbpe(r) for r in references]
        detok_score = bleu.detok_bleu(lines, [detok(r) for r in refs])
        tok_score = bleu.tok_bleu(hyps, refs)
        shortlist = "with the model's vocabulary shortlist" if use_vmap else "over the whole vocabulary"
        print(f"{args.subset}: {len(sources)} sentences, {shortlist}", file=sys.stderr)
        print(f"{bleu.DETOK_LABEL} = {detok_score.score:.2f}  ({detok_score.signature})", file=sys.stderr)
        print(f"{bleu.TOK_LABEL} = {tok_score.score:.2f}  ({tok_score.signature})", file=sys.stderr)
    return 0


@command("export")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "shortlist":
        from pet_fairseq.export.shortlist import write_shortlist

        write_shortlist(args.out, args.data_bin, args.source_lang, args.target_lang, subset=args.subset,
                        source_text=args.source_text, target_text=args.target_text, frequent=args.frequent,
                        per_token=args.per_token, force=args.force)
    elif args.command == "unroll":
        from pet_fairseq.core.unroll import unroll_checkpoint

        unroll_checkpoint(args.student, args.out, check=not args.no_check, force=args.force)
    elif args.command == "ctranslate2":
        from pet_fairseq.core.ctranslate2.convert import convert

        convert(args.student, args.out_dir, quantization=args.quantization, data_bin=args.data_bin,
                source_lang=args.source_lang, target_lang=args.target_lang, force=args.force,
                check=not args.no_check, keep_unrolled=args.keep_unrolled,
                vocab_shortlist=args.vocab_shortlist)
    else:
        return translate_command(args)
    return 0

if __name__ == "__main__":
    sys.exit(main())
