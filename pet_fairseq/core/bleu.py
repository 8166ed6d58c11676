"""BLEU two ways: sacreBLEU on detokenized text, and the tokenized BLEU IWSLT'14 papers report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU

DETOK_LABEL = "BLEU (sacrebleu detok)"
TOK_LABEL = "BLEU (tok, IWSLT-style)"


@dataclass
class BleuScore:
    """A corpus BLEU score with the sacrebleu signature that makes it reproducible."""

    score: float
    signature: str
    detail: str


def _score(metric: BLEU, hypotheses: list[str], references: list[str]) -> BleuScore:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    result = metric.corpus_score(hypotheses, [references])
    return BleuScore(score=float(result.score), signature=str(metric.get_signature()), detail=str(result))


def detok_bleu(hypotheses: list[str], references: list[str]) -> BleuScore:
    """Standard sacreBLEU (13a tokenization, cased, exp smoothing) on detokenized, de-BPE'd text."""
    return _score(BLEU(), hypotheses, references)


def tok_bleu(hypotheses: list[str], references: list[str]) -> BleuScore:
    """BLEU on lowercased, already-tokenized text split on spaces, without smoothing.

    This is what ``fairseq-generate --scoring bleu --remove-bpe`` reports on fairseq's IWSLT'14
    data (tokenized, lowercased) and what that literature quotes: the text after removing BPE,
    before detokenization.
    """
    return _score(BLEU(tokenize="none", lowercase=True, smooth_method="none", force=True), hypotheses, references)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file without their line endings (one sentence per line)."""
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Write one sentence per line (UTF-8, ``\\n`` endings)."""
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
