"""Line-level text steps that reproduce fairseq's Perl/Moses preparation recipes in Python.

Each function mirrors one command of ``examples/translation/prepare-iwslt14.sh`` or
``prepare-wmt14en2de.sh`` (the command is quoted in its docstring), so the output of our
pipeline can be compared line by line with files made by the original scripts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import regex
from sacremoses import MosesPunctNormalizer, MosesTokenizer

# prepare-iwslt14.sh: `grep -v` on these substrings (the whole line goes) ...
IWSLT_DROP_LINE_TAGS: tuple[str, ...] = (
    "<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator", "<doc", "</doc>",
)
# ... and `sed -e 's/<title>//g'` etc. on these (the tag goes, its text stays).
IWSLT_STRIP_TAGS: tuple[str, ...] = ("<title>", "</title>", "<description>", "</description>")

_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")
_WHITESPACE = re.compile(r"\s+")
_NON_PRINTING = regex.compile(r"\p{C}")
_PERIOD_END = re.compile(r"^(\S+)\.$")


def strip_train_tags(line: str) -> str | None:
    """Filter one line of an IWSLT ``train.tags.*`` file; ``None`` when the line is dropped.

    fairseq: ``grep -v '<url>' | ... | grep -v '</doc>' | sed -e 's/<title>//g' | ...
    | sed 's/^\\s*//g' | sed 's/\\s*$//g'``.
    """
    if any(tag in line for tag in IWSLT_DROP_LINE_TAGS):
        return None
    for tag in IWSLT_STRIP_TAGS:
        line = line.replace(tag, "")
    return line.strip()


def extract_segment(line: str) -> str | None:
    """Text of one ``<seg id="N">...</seg>`` line of an IWSLT xml / WMT sgm file, else ``None``.

    fairseq: ``grep '<seg id' | sed -e 's/<seg id="[0-9]*">\\s*//g' | sed -e 's/\\s*<\\/seg>\\s*//g'
    | sed -e "s/\\’/\\'/g"`` (the curly apostrophe becomes ASCII).
    """
    if "<seg id" not in line:
        return None
    line = _SEG_CLOSE.sub("", _SEG_OPEN.sub("", line))
    return fix_apostrophe(line)


def fix_apostrophe(line: str) -> str:
    """``sed -e "s/\\’/\\'/g"``: U+2019 RIGHT SINGLE QUOTATION MARK becomes ``'``."""
    return line.replace("\u2019", "'")


def remove_non_printing(line: str) -> str:
    """``remove-non-printing-char.perl``: every ``\\p{C}`` character becomes a space."""
    return _NON_PRINTING.sub(" ", line)


class PerlMosesTokenizer(MosesTokenizer):
    """sacremoses' tokenizer with the two behaviours in which it differs from tokenizer.perl.

    1. tokenizer.perl always splits the final period off the last word of a line ("split last
       words independently as they are unlikely to be non-breaking prefixes"): ``u.s.a.`` at the
       end of a sentence becomes ``u.s.a .``; sacremoses keeps it.
    2. tokenizer.perl prints whitespace-only lines unchanged instead of tokenizing them.
    """

    def handles_nonbreaking_prefixes(self, text: str) -> str:
        tokens = super().handles_nonbreaking_prefixes(text).split()
        if tokens:
            match = _PERIOD_END.match(tokens[-1])
            if match:
                tokens[-1] = match.group(1) + " ."
        return " ".join(tokens)

    def tokenize_line(self, line: str, aggressive: bool = False) -> str:
        """``tokenizer.perl -l LANG [-a]`` on one line (default XML escaping, like the Perl)."""
        if not line.strip():
            return line
        return self.tokenize(line, aggressive_dash_splits=aggressive, return_str=True, escape=True)


@dataclass(frozen=True)
class TokenizeConfig:
    """Per-line recipe: optional normalisation, Moses tokenization, optional lowercasing."""

    lang: str
    aggressive: bool = False  # tokenizer.perl -a (hyphens become `@-@`), fairseq's WMT recipe
    lowercase: bool = False  # lowercase.perl
    normalize_punct: bool = False  # normalize-punctuation.perl -l LANG (WMT train)
    remove_non_printing: bool = False  # remove-non-printing-char.perl (WMT train)


class LineProcessor:
    """Applies a :class:`TokenizeConfig` to single lines (one instance per worker process)."""

    def __init__(self, config: TokenizeConfig) -> None:
        self.config = config
        self.tokenizer = PerlMosesTokenizer(lang=config.lang)
        self.normalizer = MosesPunctNormalizer(lang=config.lang, perl_parity=True) if config.normalize_punct else None

    def __call__(self, line: str) -> str:
        if self.normalizer is not None and line.strip():
            line = self.normalizer.normalize(line)
        if self.config.remove_non_printing:
            line = remove_non_printing(line)
        line = self.tokenizer.tokenize_line(line, aggressive=self.config.aggressive)
        return perl_lowercase(line) if self.config.lowercase else line


def perl_lowercase(line: str) -> str:
    """``lowercase.perl`` (Perl's ``lc``): like ``str.lower`` but without the Greek final-sigma
    rule, so ``Σ`` always becomes ``σ`` (Python would write ``ς`` at the end of a word)."""
    if "\u03a3" not in line or "\ue000" in line:
        return line.lower()
    return line.replace("\u03a3", "\ue000").lower().replace("\ue000", "\u03c3")


def normalize_whitespace(line: str) -> str:
    """clean-corpus-n.perl's normalisation: drop ``|``, collapse whitespace runs, trim."""
    return _WHITESPACE.sub(" ", line.replace("|", "")).strip(" ")


@dataclass
class CleanStats:
    """What ``clean-corpus-n.perl`` kept and why it dropped the rest."""

    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped)}


def clean_reason(src: str, tgt: str, min_len: int, max_len: int, ratio: float) -> str | None:
    """Why ``clean-corpus-n.perl -ratio R CORPUS L1 L2 OUT MIN MAX`` drops a normalised pair.

    Returns ``None`` when kept. The Perl checks, in order: empty side, more than ``max_len``
    tokens, fewer than ``min_len`` tokens, then the length ratio (strictly greater than
    ``ratio`` either way drops; exactly ``ratio`` is kept).
    """
    if not src or not tgt:
        return "empty"
    n_src, n_tgt = src.count(" ") + 1, tgt.count(" ") + 1
    if n_src > max_len or n_tgt > max_len:
        return "too_long"
    if n_src < min_len or n_tgt < min_len:
        return "too_short"
    if n_src / n_tgt > ratio or n_tgt / n_src > ratio:
        return "ratio"
    return None


def clean_pairs(
    pairs: Iterable[tuple[str, str]], min_len: int = 1, max_len: int = 175, ratio: float = 1.5,
    stats: CleanStats | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield the (whitespace-normalised) pairs that clean-corpus-n.perl keeps; count the rest."""
    stats = stats if stats is not None else CleanStats()
    for src, tgt in pairs:
        stats.seen += 1
        src, tgt = normalize_whitespace(src), normalize_whitespace(tgt)
        reason = clean_reason(src, tgt, min_len, max_len, ratio)
        if reason is None:
            stats.kept += 1
            yield src, tgt
        else:
            stats.dropped[reason] += 1


def is_every_nth(index: int, n: int) -> bool:
    """``awk '{if (NR%n == 0) print}'`` for the 0-based line ``index`` (awk's NR is 1-based)."""
    return (index + 1) % n == 0


def split_every_nth(lines: Sequence[str], n: int = 23) -> tuple[list[str], list[str]]:
    """fairseq's IWSLT split: every ``n``-th line (23rd, 46th, ...) is valid, the rest train."""
    train = [line for i, line in enumerate(lines) if not is_every_nth(i, n)]
    valid = [line for i, line in enumerate(lines) if is_every_nth(i, n)]
    return train, valid
