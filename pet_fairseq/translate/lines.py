"""Answer every input line, in order: empty lines stay empty, over-long lines are truncated with a warning.

A model cannot read more source positions than it was built for (fairseq's ``max_source_positions``,
1,024 by default, end-of-sentence included): fairseq-interactive stops at such a line with
``Size of sample #0 is invalid``, so no later line is answered. Here the line is **truncated** to
the first tokens that fit (cut at a word boundary) and translated, with a warning on stderr naming
the line; every other line is unaffected. When the recipe lowercased the training text, input
with capitals is lowercased as well (said once), so that capitalised words do not become ``<unk>``.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from pet_fairseq.core.errors import PetError
from pet_fairseq.translate.text import SourceText, TargetText


class TranslateError(PetError):
    """A problem with the user's input or options, explained in the message (printed without a traceback)."""


class Backend(Protocol):
    """A loaded model: how many source tokens it reads, and batched beam search over token lists."""

    #: subword tokens a source may have (end-of-sentence excluded), or None when unlimited
    max_source_tokens: Optional[int]

    def translate(self, sources: list[list[str]]) -> list[str]:
        """The best hypothesis of each source as subword tokens joined by spaces, in input order."""
        ...


class LineTranslator:
    """Raw lines in, translated lines out, one for one."""

    def __init__(self, backend: Backend, source: SourceText, target: TargetText,
                 warn: Callable[[str], None]) -> None:
        self.backend, self.source, self.target, self.warn = backend, source, target, warn
        self.lowercase_noted = False

    def prepare(self, line: str, number: int) -> list[str]:
        """Subword tokens of one non-empty line (1-based ``number``), truncated to what the model reads."""
        if self.source.lowercase and not self.lowercase_noted and line != line.lower():
            self.warn(f"note: the model's training text was lowercased, so the input is lowercased too "
                      f"(first capitals on line {number}); the output is lowercase")
            self.lowercase_noted = True
        tokens = self.source(line)
        limit = self.backend.max_source_tokens
        if limit is not None and len(tokens) > limit:
            kept = self.source.truncate(tokens, limit)
            self.warn(f"warning: line {number}: {len(tokens):,} subword tokens, more than the {limit:,} the model "
                      f"can read: translating only the first {len(kept):,} (the rest of the line is dropped)")
            tokens = kept
        return tokens

    def translate(self, lines: Sequence[str], first_number: int = 1) -> list[str]:
        """Translations of ``lines`` (line ``first_number`` first); blank lines give empty lines."""
        outputs = [""] * len(lines)
        positions, sources = [], []
        for offset, line in enumerate(lines):
            if not line.strip():
                continue
            tokens = self.prepare(line, first_number + offset)
            if tokens:
                positions.append(offset)
                sources.append(tokens)
        if sources:
            hypotheses = self.backend.translate(sources)
            if len(hypotheses) != len(sources):
                raise TranslateError(f"the model returned {len(hypotheses)} hypotheses for {len(sources)} sentences")
            for offset, hypothesis in zip(positions, hypotheses):
                outputs[offset] = self.target(hypothesis)
        return outputs
