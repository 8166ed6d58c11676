"""The CTranslate2 runtime every tool shares: conversion, model directories, subsets, decoding.

* :mod:`~pet_fairseq.core.ctranslate2.convert` -- unroll a student (:mod:`pet_fairseq.core.unroll`)
  and convert it with CTranslate2's fairseq converter into a model directory
* :mod:`~pet_fairseq.core.ctranslate2.shortlist_record` -- the record that ties a vocabulary
  shortlist to its language pair and dictionaries, checked before the conversion stores it
* :mod:`~pet_fairseq.core.ctranslate2.model_dir` -- model directories: recognised, their export
  record, shortlist and ``model.bin`` read, their vocabularies checked against a data-bin
* :mod:`~pet_fairseq.core.ctranslate2.subset` -- a binarized subset as CTranslate2 input
* :mod:`~pet_fairseq.core.ctranslate2.decoding` -- loading on N threads as P parallel batches,
  fairseq's batching and length limit, the one beam search (with or without the shortlist)

``ctranslate2`` is an optional extra (``pip install -e .[ctranslate2]``), imported only when a
model is converted or loaded. This package's ``__init__`` imports nothing, and ``decoding`` and
``model_dir`` import neither torch nor fairseq: the evaluation tool's CTranslate2 process
(:mod:`pet_fairseq.evaluation.ct2_worker`) runs without them.
"""
