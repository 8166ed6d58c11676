"""Turning decoder output into text: BPE removal (fairseq's BPE decoders) and detokenization."""

from __future__ import annotations

from argparse import Namespace
from typing import Callable

TextFn = Callable[[str], str]


def build_bpe_decoder(bpe: str | None, bpe_codes: str | None = None, sentencepiece_model: str | None = None) -> TextFn:
    """``bpe.decode`` of fairseq's BPE for ``--bpe`` (``subword_nmt``/``sentencepiece``), or identity.

    Built with ``fairseq.data.encoders.build_bpe`` exactly as ``fairseq-generate --bpe`` does.
    """
    if bpe is None or bpe == "none":
        return lambda text: text
    from fairseq.data import encoders

    encoder = encoders.build_bpe(Namespace(bpe=bpe, bpe_codes=bpe_codes, bpe_separator="@@",
                                           sentencepiece_model=sentencepiece_model))
    if encoder is None:
        raise ValueError(f"unknown --bpe {bpe!r}")
    return encoder.decode


def build_detokenizer(tokenizer: str, target_lang: str) -> TextFn:
    """Moses detokenizer for ``target_lang`` (sacremoses, as fairseq's ``--tokenizer moses``), or identity."""
    if tokenizer == "none":
        return lambda text: text
    if tokenizer != "moses":
        raise ValueError(f"unknown --tokenizer {tokenizer!r} (expected moses or none)")
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang=target_lang)
    return lambda text: detokenizer.detokenize(text.split())
