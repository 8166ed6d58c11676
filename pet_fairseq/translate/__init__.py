"""Translate raw text with a trained model: ``python -m pet_fairseq.translate`` (``scripts/translate.sh``).

The text goes through the same preparation as the model's data-bin (its recipe file, see
:mod:`pet_fairseq.preprocessing.recipe`): Moses tokenization, lowercasing where the recipe
lowercased, BPE; the hypotheses come back with BPE removed and Moses-detokenized. One concept
per module:

* :mod:`~pet_fairseq.translate.text` -- one source line to subword tokens and one hypothesis back to text
* :mod:`~pet_fairseq.translate.lines` -- every input line answered in order: empty lines, over-long lines
* :mod:`~pet_fairseq.translate.fairseq_model` -- batched beam search with a fairseq checkpoint
* :mod:`~pet_fairseq.translate.ctranslate2_model` -- the same with a CTranslate2 export
* :mod:`~pet_fairseq.translate.direction` -- ``--source-lang``/``--target-lang`` checked against the model's direction
* :mod:`~pet_fairseq.translate.cli` -- command line: loading, reading input in buffers, writing output
"""

from pet_fairseq.translate.lines import LineTranslator, TranslateError
from pet_fairseq.translate.text import SourceText, TargetText

__all__ = ["LineTranslator", "SourceText", "TargetText", "TranslateError"]
