"""Subword segmentation: subword-nmt BPE (fairseq's recipes) or sentencepiece."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from pet_fairseq.preprocessing.files import PrepError, read_lines, require_file

SUBWORD_NMT = "subword-nmt"
SENTENCEPIECE = "sentencepiece"


def learn_subword_nmt(train_files: Iterable[Path], codes: Path, merges: int, workers: int = 1) -> int:
    """``cat train.L1 train.L2 > T; learn_bpe.py -s MERGES < T > codes`` (joint BPE).

    Returns the number of merges written (fewer than asked when no pair occurs twice).
    """
    from subword_nmt import learn_bpe as learn_bpe_module
    from tqdm import tqdm

    # subword-nmt's own progress bar, but quiet when stderr is not a terminal (logs, CI).
    learn_bpe_module.tqdm = functools.partial(tqdm, desc="learn BPE", unit=" merges", disable=None, mininterval=1.0)
    codes.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=codes.parent) as tmp:
        joint = Path(tmp) / "train.joint"
        with open(joint, "wb") as out:
            for path in train_files:
                with open(path, "rb") as handle:
                    shutil.copyfileobj(handle, out)
        with open(joint, encoding="utf-8") as infile, open(codes, "w", encoding="utf-8") as outfile:
            learn_bpe_module.learn_bpe(infile, outfile, merges, num_workers=max(1, workers))
    return count_merges(codes)


def count_merges(codes: Path) -> int:
    """Merge operations in a subword-nmt codes file (its ``#version`` header not counted)."""
    return sum(1 for line in read_lines(codes) if line and not line.startswith("#version"))


class SubwordNmtSegmenter:
    """``apply_bpe.py -c CODES`` on single lines (picklable factory for :func:`map_lines`)."""

    def __init__(self, codes: str) -> None:
        from subword_nmt.apply_bpe import BPE

        with open(codes, encoding="utf-8") as handle:
            self.bpe = BPE(handle)

    def __call__(self, line: str) -> str:
        # apply_bpe.py reads lines with their "\n"; process_line keeps surrounding whitespace.
        return self.bpe.process_line(line + "\n")[:-1]


def train_sentencepiece(
    train_files: Iterable[Path], prefix: Path, vocab_size: int, model_type: str = "bpe", workers: int = 1,
) -> Path:
    """Train a joint sentencepiece model on the tokenized training text; return ``prefix.model``."""
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            input=[str(p) for p in train_files], model_prefix=str(prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, input_sentence_size=2_000_000,
            shuffle_input_sentence=True, num_threads=max(1, workers), minloglevel=2,
        )
    except RuntimeError as err:
        raise PrepError(f"sentencepiece training failed: {err}. Try a smaller --vocab-size.") from None
    return prefix.with_suffix(".model")


class SentencePieceSegmenter:
    """Encode single lines into space-separated sentencepiece pieces."""

    def __init__(self, model: str) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=model)

    def __call__(self, line: str) -> str:
        return " ".join(self.sp.encode(line, out_type=str))


def sentencepiece_vocab_size(model: Path) -> int:
    """Pieces in a sentencepiece model."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model)).get_piece_size()


def check_codes(path: Path, method: str) -> Path:
    """Validate a user-given ``--bpe-codes`` file for ``method``."""
    require_file(path, "--bpe-codes file", "Pass an existing codes file (or drop --bpe-codes to learn one).")
    if method == SENTENCEPIECE:
        try:
            sentencepiece_vocab_size(path)
        except (RuntimeError, OSError) as err:
            raise PrepError(f"--bpe-codes {path} is not a sentencepiece model ({err}).") from None
        return path
    for number, line in enumerate(read_lines(path), start=1):
        if number == 1 and line.startswith("#version"):
            continue
        if len(line.strip("\r\n ").split(" ")) != 2:
            raise PrepError(
                f"--bpe-codes {path}: line {number} is not a subword-nmt merge ('A B'): {line[:60]!r}. "
                "Pass a codes file written by subword-nmt learn-bpe (or a .model with --bpe sentencepiece)."
            )
    return path


def segmenter_factory(method: str) -> type:
    """The segmenter class for ``method`` (its constructor takes the codes/model path as str)."""
    return SentencePieceSegmenter if method == SENTENCEPIECE else SubwordNmtSegmenter


def segment_lines(method: str, codes: Path, lines: Iterator[str]) -> Iterator[str]:
    """Segment lines in this process (handy for tests and small files)."""
    segment = segmenter_factory(method)(str(codes))
    return (segment(line) for line in lines)
