"""Export a trained student for deployment.

* :mod:`~pet_fairseq.export.unroll` -- a PET student as a standard fairseq ``transformer``
  checkpoint (reused layers materialised per depth), loadable without ``--user-dir``
* :mod:`~pet_fairseq.export.ctranslate2` -- unroll, then convert with CTranslate2's fairseq
  converter; decode binarized subsets or text files with the converted model
* :mod:`~pet_fairseq.export.ct2_worker` -- the torch-free decoding process that the evaluation
  tool runs for a CTranslate2 model directory

Command line: ``python -m pet_fairseq.export {unroll,ctranslate2,translate} ...``.
"""

from pet_fairseq.export.unroll import ExportError, UnrollSummary, unroll_checkpoint, unroll_state

__all__ = ["ExportError", "UnrollSummary", "unroll_checkpoint", "unroll_state"]
