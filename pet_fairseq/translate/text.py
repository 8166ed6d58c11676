"""One source line to the model's subword tokens, and one hypothesis back to text, as a recipe says.

The steps are the preparation pipeline's own (:class:`~pet_fairseq.preprocessing.text.LineProcessor`
for Moses tokenization and lowercasing, :mod:`~pet_fairseq.preprocessing.bpe` for the subword
model) and the core's post-processing (:mod:`~pet_fairseq.core.postprocess`: fairseq's BPE
decoders, sacremoses' detokenizer, as the evaluation tool uses them), so a line is prepared
exactly like the data-bin's test set.
"""

from __future__ import annotations

from pet_fairseq.core.postprocess import build_bpe_decoder, build_detokenizer
from pet_fairseq.preprocessing.bpe import segmenter_factory
from pet_fairseq.preprocessing.recipe import FAIRSEQ_BPE, DataRecipe
from pet_fairseq.preprocessing.text import LineProcessor, perl_lowercase

#: fairseq's --bpe names -> the preparation pipeline's subword method names
_PIPELINE_BPE = {fairseq_name: ours for ours, fairseq_name in FAIRSEQ_BPE.items()}
SENTENCEPIECE_WORD_START = "\u2581"


class SourceText:
    """Raw source line -> subword tokens (Moses tokenization, lowercasing, BPE as the recipe says)."""

    def __init__(self, recipe: DataRecipe, source_lang: str) -> None:
        self.recipe = recipe
        self.lowercase = recipe.lowercase
        self.tokenize = LineProcessor(recipe.tokenize_config(source_lang)) if recipe.tokenizer == "moses" else None
        self.segment = (segmenter_factory(_PIPELINE_BPE[recipe.bpe])(str(recipe.bpe_model))
                        if recipe.bpe != "none" else None)

    def __call__(self, line: str) -> list[str]:
        if self.tokenize is not None:
            text = self.tokenize(line)  # lowercases too when the recipe does
        else:
            text = perl_lowercase(line) if self.lowercase else line
        if self.segment is not None:
            text = self.segment(text)
        return text.split()

    def truncate(self, tokens: list[str], limit: int) -> list[str]:
        """The first ``limit`` tokens, cut at a word boundary (see :func:`truncate`)."""
        return truncate(tokens, limit, self.recipe.bpe)


def truncate(tokens: list[str], limit: int, bpe: str) -> list[str]:
    """The first ``limit`` subword tokens, ending at a word boundary when the cut falls inside a word.

    subword-nmt (``bpe="subword_nmt"``) marks a word that continues with ``@@``; sentencepiece
    marks a word start with ``▁``. A single word longer than ``limit`` is cut inside the word.
    """
    if len(tokens) <= limit:
        return list(tokens)
    end = limit
    if bpe == "subword_nmt":
        while end > 0 and tokens[end - 1].endswith("@@"):
            end -= 1
    elif bpe == "sentencepiece":
        while end > 0 and not tokens[end].startswith(SENTENCEPIECE_WORD_START):
            end -= 1
    return list(tokens[: end or limit])


class TargetText:
    """Hypothesis (subword tokens as one string) -> text: BPE removed, then Moses-detokenized."""

    def __init__(self, recipe: DataRecipe, target_lang: str) -> None:
        model = str(recipe.bpe_model) if recipe.bpe_model is not None else None
        self.unbpe = build_bpe_decoder(recipe.bpe, bpe_codes=model, sentencepiece_model=model)
        self.detokenize = build_detokenizer(recipe.tokenizer, target_lang)

    def __call__(self, hypothesis: str) -> str:
        return self.detokenize(self.unbpe(hypothesis))
