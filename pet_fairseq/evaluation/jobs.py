"""What a per-model decoding process is given and gives back: the job settings, the text files, BLEU.

Shared by every backend of the comparison tool: the fairseq decoding process
(:mod:`pet_fairseq.evaluation.decode`) and the CTranslate2 one (:mod:`pet_fairseq.evaluation.ct2_backend`)
build their job with :func:`make_job`, write hypotheses and references with :func:`write_texts` and
are scored with :func:`score`, so both are measured and scored the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from pet_fairseq.core import bleu
from pet_fairseq.core.checks import resolve_languages, task_config
from pet_fairseq.core.direction import check_direction
from pet_fairseq.evaluation.errors import EvaluationError


def file_stem(label: str) -> str:
    """A label made safe for a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def model_languages(args: argparse.Namespace, path: str | Path, state: dict, seen: dict) -> tuple[str, str]:
    """The direction ``path`` is compared in: the one it records, which ``--source-lang``/``--target-lang`` may only
    repeat (:func:`~pet_fairseq.core.direction.check_direction`), and which must be that of the models before it:
    the first direction found is kept in ``seen["pair"]`` (one dict per comparison)."""
    task = task_config(state)
    check_direction(str(path), (task.get("source_lang"), task.get("target_lang")), args.source_lang,
                    args.target_lang, error=EvaluationError)
    langs = tuple(resolve_languages(state, args.data_bin, args.source_lang, args.target_lang))
    pair = seen.setdefault("pair", langs)
    if langs != pair:
        raise EvaluationError(f"{path} translates {langs[0]}->{langs[1]}, but the models before it {pair[0]}->{pair[1]}: "
                              "the models of one comparison must translate one direction; compare it separately")
    return langs  # type: ignore[return-value]


def make_job(args: argparse.Namespace, label: str, checkpoint: Path, langs: tuple[str, str], workdir: Path) -> dict:
    """The settings one decoding subprocess needs (identical for every model but the paths)."""
    stem = file_stem(label)
    return {
        "label": label, "file_stem": stem, "checkpoint": str(checkpoint), "data_bin": str(args.data_bin.resolve()),
        "subset": args.subset, "source_lang": langs[0], "target_lang": langs[1], "beam": args.beam,
        "max_len_a": args.max_len_a, "max_len_b": args.max_len_b,
        "batch_size": args.batch_size, "max_tokens": args.max_tokens, "threads": args.threads,
        "repeats": args.repeats, "warmup": args.warmup, "max_sentences": args.max_sentences,
        "bpe": args.bpe, "bpe_codes": args.bpe_codes, "sentencepiece_model": args.sentencepiece_model,
        "tokenizer": args.tokenizer, "device": args.device, "out_dir": str(args.out_dir.resolve()),
        "result_path": str(workdir / f"{stem}.result.json"),
    }


def write_texts(job: dict, hyps: list[str], refs: list[str], detok: Callable[[str], str]) -> dict[str, str]:
    """Write tokenized and detokenized hypotheses and references to the job's ``out_dir``; return their paths."""
    out = Path(job["out_dir"])
    stem, subset = job["file_stem"], job["subset"]
    paths = {
        "hyp_tok": out / f"{stem}.{subset}.hyp.tok.txt",
        "hyp_detok": out / f"{stem}.{subset}.hyp.detok.txt",
        "ref_tok": out / f"{subset}.ref.tok.txt",
        "ref_detok": out / f"{subset}.ref.detok.txt",
    }
    bleu.write_lines(paths["hyp_tok"], hyps)
    bleu.write_lines(paths["hyp_detok"], [detok(h) for h in hyps])
    bleu.write_lines(paths["ref_tok"], refs)
    bleu.write_lines(paths["ref_detok"], [detok(r) for r in refs])
    return {key: str(path) for key, path in paths.items()}


def score(files: dict[str, str]) -> dict:
    """Both BLEU variants from the hypothesis/reference files a decoding process wrote."""
    detok = bleu.detok_bleu(bleu.read_lines(files["hyp_detok"]), bleu.read_lines(files["ref_detok"]))
    tok = bleu.tok_bleu(bleu.read_lines(files["hyp_tok"]), bleu.read_lines(files["ref_tok"]))
    return {"detok": detok.score, "detok_signature": detok.signature, "detok_detail": detok.detail,
            "tok": tok.score, "tok_signature": tok.signature, "tok_detail": tok.detail}
