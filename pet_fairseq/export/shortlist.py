"""Lexical vocabulary shortlists: the target tokens a batch may produce, given its source tokens.

A shortlist restricts the decoder's output projection and softmax from the whole target vocabulary
``V`` to a candidate set built per batch (CTranslate2's *vocabulary mapping*, ``use_vmap``; the
WMT efficiency-task students' lexical shortlists). For a batch with source tokens ``S``::

    candidates(S) = F  ∪  {EOS, BOS, UNK}  ∪  ⋃_{s ∈ S} ( top_K(s) ∪ copy(s) )

* ``F``: the ``frequent`` target tokens found in the most sentences of the training bitext (function
  words, punctuation: the tokens every sentence needs);
* ``top_K(s)``: the ``per_token`` target tokens most associated with source token ``s`` by the
  Dice coefficient over sentence pairs, ``dice(s, t) = 2 · c(s, t) / (c(s) + c(t))``, where ``c(s)``
  and ``c(t)`` count the sentence pairs whose source holds ``s`` / whose target holds ``t``, and
  ``c(s, t)`` those holding both (ties go to the more frequent ``t``);
* ``copy(s)``: ``s`` itself when the target vocabulary has it (names and numbers pass through a
  joined BPE vocabulary unchanged).

The decoder then scores ``|candidates|`` entries per step instead of ``|V|``. The price is that a
token outside the candidates cannot be produced; the shortlist's BLEU cost is measured, not assumed
(docs/export.md, "Vocabulary shortlist").

:func:`build_shortlist` counts the bitext with vectorised numpy once its tokens are flattened
into one array; :meth:`Shortlist.write_vmap` writes CTranslate2's format, one ``source<TAB>targets`` line
per source token and the always-included tokens under the empty key.

A shortlist is only right for the model whose dictionaries and direction it was counted with: one
from another data-bin names tokens the model does not have (or has under other ids), one built with
source and target swapped maps target tokens to source tokens. :meth:`Shortlist.write` therefore
writes a record next to the vmap (``OUT.vmap.json``: language pair, data-bin, digests of both
dictionaries and of the vmap), and the conversion refuses to store a shortlist in a model whose
language pair or dictionaries differ from the record, or that has no record
(:func:`pet_fairseq.core.ctranslate2.shortlist_record.check_shortlist`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pet_fairseq.core.ctranslate2.shortlist_record import RECORD_FORMAT, dictionary_digest, record_path
from pet_fairseq.core.errors import ExportError
from pet_fairseq.core.files import file_digest

logger = logging.getLogger("pet_fairseq.export")

#: chosen on Multi30k's valid set (10, 25 and 50 per token tried: no BLEU lost at any, the shortest list fastest;
#: docs/export.md, "Vocabulary shortlist")
DEFAULT_FREQUENT = 100
DEFAULT_PER_TOKEN = 10


@dataclass
class Shortlist:
    """Always-included target tokens and, per source token, its candidate target tokens."""

    frequent: list[str]
    candidates: dict[str, list[str]]
    sentence_pairs: int

    def write_vmap(self, path: "str | Path") -> Path:
        """Write CTranslate2's vocabulary-mapping file (``source<TAB>target target ...`` per line)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["\t" + " ".join(self.frequent)]
        lines += [f"{source}\t{' '.join(targets)}" for source, targets in self.candidates.items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def write(self, path: "str | Path", data_bin: "str | Path", source_lang: str, target_lang: str) -> Path:
        """Write the vmap to ``path`` and its record to :func:`record_path` (both through a temporary file).

        The record names the language pair and the data-bin whose ``dict.{lang}.txt`` the shortlist was
        counted with, the digests of those dictionaries and the digest of the vmap itself, so that a
        record never vouches for a vmap written later.
        """
        path, data_bin = Path(path), Path(data_bin)
        path.parent.mkdir(parents=True, exist_ok=True)
        vmap_tmp, record_tmp = (path.with_name(f".{name}.{os.getpid()}.tmp")
                                for name in (path.name, record_path(path).name))
        try:
            self.write_vmap(vmap_tmp)
            record = {"format": RECORD_FORMAT, "source_lang": source_lang, "target_lang": target_lang,
                      "data_bin": str(data_bin.resolve()),
                      "source_dictionary_sha256": dictionary_digest(data_bin / f"dict.{source_lang}.txt"),
                      "target_dictionary_sha256": dictionary_digest(data_bin / f"dict.{target_lang}.txt"),
                      "vmap_sha256": file_digest(vmap_tmp), "sentence_pairs": self.sentence_pairs}
            record_tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            os.replace(vmap_tmp, path)
            os.replace(record_tmp, record_path(path))
        finally:
            vmap_tmp.unlink(missing_ok=True)
            record_tmp.unlink(missing_ok=True)
        return path

    def describe(self) -> str:
        sizes = [len(t) for t in self.candidates.values()] or [0]
        return (f"shortlist from {self.sentence_pairs:,} sentence pairs: {len(self.frequent)} always-included "
                f"target tokens, {len(self.candidates):,} source tokens with {np.mean(sizes):.1f} candidates "
                f"on average (at most {max(sizes)})")


def _encode(sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(sentence index, token id) of every *distinct* token of every sentence, and the id -> token list."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    flat = [token for sentence in sentences for token in sentence]
    vocabulary, ids = np.unique(np.asarray(flat, dtype=object).astype(str), return_inverse=True)
    rows = np.repeat(np.arange(len(sentences), dtype=np.int64), lengths)
    distinct = np.unique(rows * len(vocabulary) + ids.astype(np.int64))
    return distinct // len(vocabulary), distinct % len(vocabulary), vocabulary.tolist()


def _pairs(src_rows: np.ndarray, src_ids: np.ndarray, tgt_rows: np.ndarray, tgt_ids: np.ndarray,
           sentences: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (source id, target id) of a sentence pair, once per pair: the cross product per sentence.

    Entries are sorted by sentence (``np.unique`` in :func:`_encode`), so each source entry is
    repeated once per target token of its sentence, and those copies read the sentence's target
    entries from its offset on.
    """
    tgt_count = np.bincount(tgt_rows, minlength=sentences)
    tgt_start = np.concatenate(([0], np.cumsum(tgt_count)[:-1]))
    repeats = tgt_count[src_rows]
    src = np.repeat(src_ids, repeats)
    block_start = np.repeat(np.cumsum(repeats) - repeats, repeats)
    offset = np.arange(len(src), dtype=np.int64) - block_start
    return src, tgt_ids[np.repeat(tgt_start[src_rows], repeats) + offset]


def _top_associated(src: np.ndarray, tgt: np.ndarray, src_freq: np.ndarray, tgt_freq: np.ndarray,
                    allowed: np.ndarray, per_token: int) -> tuple[np.ndarray, np.ndarray]:
    """(source id, target id) pairs: per source id, the ``per_token`` allowed targets of highest Dice.

    ``src``/``tgt`` hold one entry per sentence pair containing both tokens; ties in Dice go to the
    target in more sentences, then to the lower id. Output sorted by source id, best first.
    """
    codes, joint = np.unique(src * len(tgt_freq) + tgt, return_counts=True)
    pair_src, pair_tgt = codes // len(tgt_freq), codes % len(tgt_freq)
    keep = allowed[pair_tgt]
    pair_src, pair_tgt, joint = pair_src[keep], pair_tgt[keep], joint[keep]
    dice = 2.0 * joint / (src_freq[pair_src] + tgt_freq[pair_tgt])
    order = np.lexsort((-tgt_freq[pair_tgt], -dice, pair_src))
    pair_src, pair_tgt = pair_src[order], pair_tgt[order]
    rank = np.arange(len(pair_src)) - np.searchsorted(pair_src, pair_src, side="left")
    return pair_src[rank < per_token], pair_tgt[rank < per_token]


def build_shortlist(sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]],
                    source_vocabulary: Sequence[str], target_vocabulary: Sequence[str],
                    frequent: int = DEFAULT_FREQUENT, per_token: int = DEFAULT_PER_TOKEN) -> Shortlist:
    """The shortlist of a tokenized bitext (see the module docstring).

    Only ``target_vocabulary`` tokens are candidates, and only ``source_vocabulary`` tokens get an entry
    (a text bitext may hold rare tokens the model reads as ``<unk>``): one never seen in the bitext
    keeps only its copy (when the target vocabulary has it).
    """
    if len(sources) != len(targets):
        raise ExportError(f"the shortlist bitext is not parallel: {len(sources):,} source and "
                          f"{len(targets):,} target sentences")
    if not any(sources) or not any(targets):
        raise ExportError("the shortlist bitext is empty (no tokens on one side)")
    if frequent < 0:
        raise ExportError(f"--frequent {frequent}: the always-allowed target tokens must be >= 0")
    if per_token < 1:
        raise ExportError(f"--per-token {per_token}: the candidates per source token must be >= 1")
    src_rows, src_ids, src_vocab = _encode(sources)
    tgt_rows, tgt_ids, tgt_vocab = _encode(targets)
    target_set = set(target_vocabulary)
    allowed = np.fromiter((t in target_set for t in tgt_vocab), dtype=bool, count=len(tgt_vocab))
    src_freq = np.bincount(src_ids, minlength=len(src_vocab))
    tgt_freq = np.bincount(tgt_ids, minlength=len(tgt_vocab))
    by_frequency = np.lexsort((np.arange(len(tgt_vocab)), -tgt_freq))  # ids follow token order
    always = [tgt_vocab[i] for i in by_frequency[allowed[by_frequency]][:frequent]]

    pair_src, pair_tgt = _top_associated(*_pairs(src_rows, src_ids, tgt_rows, tgt_ids, len(sources)),
                                         src_freq, tgt_freq, allowed, per_token)
    bounds = np.flatnonzero(np.diff(pair_src)) + 1
    associated = {src_vocab[group_src[0]]: [tgt_vocab[i] for i in group_tgt]
                  for group_src, group_tgt in zip(np.split(pair_src, bounds), np.split(pair_tgt, bounds))
                  if len(group_src)}
    candidates = {}
    for source in dict.fromkeys(source_vocabulary):
        listed = associated.get(source, [])
        copy = [source] if source in target_set and source not in listed else []
        if listed or copy:
            candidates[source] = listed + copy
    return Shortlist(frequent=always, candidates=candidates, sentence_pairs=len(sources))


def read_text(path: "str | Path") -> list[list[str]]:
    """Tokenized sentences of a text file, one per line (BPE'd like the model's training data)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist; pass the BPE'd training text of that side")
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def dictionary_symbols(path: Path) -> list[str]:
    """The real tokens of a fairseq ``dict.txt`` (no special symbols, no ``madeupword`` padding)."""
    from fairseq.data import Dictionary

    if not path.is_file():
        raise ExportError(f"the dictionary {path} does not exist; pass --data-bin with the model's data-bin")
    dictionary = Dictionary.load(str(path))
    return [s for s in dictionary.symbols[dictionary.nspecial:] if not s.startswith("madeupword")]


def write_shortlist(out: "str | Path", data_bin: "str | Path", source_lang: str, target_lang: str,
                    subset: str = "train", source_text: "str | Path | None" = None,
                    target_text: "str | Path | None" = None, frequent: int = DEFAULT_FREQUENT,
                    per_token: int = DEFAULT_PER_TOKEN, force: bool = False) -> Shortlist:
    """Count a bitext (``subset`` of ``data_bin``, or the two text files) and write its vmap to ``out``."""
    out, data_bin = Path(out), Path(data_bin)
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    if (source_text is None) != (target_text is None):
        raise ExportError("give both --source-text and --target-text, or neither (then --subset of --data-bin is read)")
    vocabularies = [dictionary_symbols(data_bin / f"dict.{lang}.txt") for lang in (source_lang, target_lang)]
    if source_text is None:
        from pet_fairseq.core.ctranslate2.subset import read_subset
        from pet_fairseq.core.unroll import export_errors

        with export_errors():
            sources, references = read_subset(data_bin, subset, source_lang, target_lang)
        targets = [reference.split() for reference in references]
    else:
        sources, targets = read_text(source_text), read_text(target_text)
    shortlist = build_shortlist(sources, targets, *vocabularies, frequent=frequent, per_token=per_token)
    shortlist.write(out, data_bin, source_lang, target_lang)
    logger.info("%s; wrote %s and its record %s", shortlist.describe(), out, record_path(out).name)
    return shortlist
