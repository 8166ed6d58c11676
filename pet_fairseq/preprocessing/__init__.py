"""Offline, tested re-implementation of fairseq's translation data preparation.

``data_prep/prepare-{iwslt14,wmt14,multi30k}.sh`` are thin wrappers around
``python -m pet_fairseq.preprocessing`` (see :mod:`pet_fairseq.preprocessing.cli`):

* :mod:`~pet_fairseq.preprocessing.text`: tag/XML stripping, Moses tokenization with
  tokenizer.perl parity, lowercasing, clean-corpus-n, the every-23rd valid split;
* :mod:`~pet_fairseq.preprocessing.bpe`: subword-nmt and sentencepiece;
* :mod:`~pet_fairseq.preprocessing.pipeline`: the dataset recipes.
"""

from pet_fairseq.preprocessing.files import PrepError
from pet_fairseq.preprocessing.pipeline import RECIPES, Options, run_recipe

__all__ = ["PrepError", "RECIPES", "Options", "run_recipe"]
