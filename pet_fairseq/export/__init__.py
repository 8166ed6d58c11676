"""Export a trained student for deployment.

* :mod:`~pet_fairseq.export.unroll` -- a PET student as a standard fairseq ``transformer``
  checkpoint (reused layers materialised per depth), loadable without ``--user-dir``
* :mod:`~pet_fairseq.export.ctranslate2` -- unroll, then convert with CTranslate2's fairseq
  converter
* :mod:`~pet_fairseq.export.shortlist` -- lexical vocabulary shortlists counted from a bitext,
  stored in a CTranslate2 model (``use_vmap``) to decode over a per-batch subset of the vocabulary
* :mod:`~pet_fairseq.export.__main__` -- command line: ``python -m pet_fairseq.export
  {shortlist,unroll,ctranslate2,translate} ...``; ``translate`` decodes binarized subsets or text files with a
  converted model

Export builds on the evaluation tool (checkpoint reading, data-bin checks, BLEU, and the
CTranslate2 model directories of :mod:`pet_fairseq.evaluation.ct2_model` and
:mod:`pet_fairseq.evaluation.ct2_worker`); the evaluation tool never imports export.
"""

from pet_fairseq.export.unroll import ExportError, UnrollSummary, unroll_checkpoint, unroll_state

__all__ = ["ExportError", "UnrollSummary", "unroll_checkpoint", "unroll_state"]
