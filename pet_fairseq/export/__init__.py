"""Export a trained student for deployment.

* :mod:`~pet_fairseq.export.shortlist` -- lexical vocabulary shortlists counted from a bitext,
  stored in a CTranslate2 model (``use_vmap``) to decode over a per-batch subset of the vocabulary
* :mod:`~pet_fairseq.export.__main__` -- command line: ``python -m pet_fairseq.export
  {shortlist,unroll,ctranslate2,translate} ...``; ``translate`` decodes binarized subsets or text files with a
  converted model

The command line builds on the core, like every tool: unrolling a PET student into a standard
fairseq ``transformer`` checkpoint (:mod:`pet_fairseq.core.unroll`), the conversion with
CTranslate2's fairseq converter (:mod:`pet_fairseq.core.ctranslate2.convert`, which sequence-level
KD uses too), checkpoint reading, data-bin checks, BLEU, and the CTranslate2 model directories and
decoding (:mod:`pet_fairseq.core.ctranslate2`). It imports no other tool.
"""
