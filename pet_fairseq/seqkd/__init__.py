"""Sequence-level knowledge distillation (Kim & Rush 2016): a data-bin whose targets are the teacher's.

The student is trained with any criterion on ``(x, ŷ)`` where ``ŷ ≈ argmax_y p_T(y | x)`` is the
teacher's beam-search (or greedy) output for the source ``x``, instead of the reference ``y``:

    L_seq-KD = − Σ_t log p_S(ŷ_t | ŷ_<t, x)

* :mod:`~pet_fairseq.seqkd.corpus` -- the split's sources and references, contiguous shards, shard
  files, and the merge into a new data-bin with the **same dictionaries** (other splits copied)
* :mod:`~pet_fairseq.seqkd.engines` -- the teacher's decoders: fairseq's ``SequenceGenerator`` or a
  CTranslate2 conversion of the teacher, both on the same length-sorted batches
* :mod:`~pet_fairseq.seqkd.cli` -- ``python -m pet_fairseq.seqkd`` (behind
  ``scripts/distill_corpus.sh``): resumable, shardable across processes, with a progress bar

Invariant: for a given teacher, split, decoding options and shard count the output files are
byte-identical however the shards were scheduled (one process, several, or after a resume).
"""
