"""Decoding with a CTranslate2 model as fairseq decodes: batches, length limits, beam search, threads.

:func:`load_translator` loads a model directory on N CPU threads, as one worker or as P workers
decoding parts of each batch side by side; :func:`make_batches` groups sentences as fairseq does;
:func:`search` is the one beam search every tool runs (fairseq's per-batch length limit
:func:`max_decoding_length`, sources never truncated, optionally over the model's vocabulary
shortlist); :func:`translate` runs it over batches. The comparison tool's CTranslate2 process
(:mod:`pet_fairseq.evaluation.ct2_worker`), ``python -m pet_fairseq.export translate``, the
translation tool and sequence-level KD's CTranslate2 teacher decode with these, so a model gives
the same hypotheses in every tool.

Standard library only (``ctranslate2`` is imported when a model is loaded), so the torch-free worker
imports it.
"""

from typing import Dict, List, Optional, Sequence, Tuple

from pet_fairseq.core.errors import InputError


def make_batches(lengths: Sequence[int], batch_size: Optional[int], max_tokens: Optional[int]) -> List[List[int]]:
    """Sentence indices grouped like fairseq: sorted by source length, then ``batch_size`` sentences
    per batch, or as many as fit ``max_tokens`` padded source tokens (EOS included)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: List[List[int]] = []
    current: List[int] = []
    for index in order:
        candidate = current + [index]
        too_many = batch_size is not None and len(candidate) > batch_size
        too_long = max_tokens is not None and len(candidate) * (max(lengths[i] for i in candidate) + 1) > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            candidate = [index]
        current = candidate
    if current:
        batches.append(current)
    return batches


def max_decoding_length(batch_lengths: Sequence[int], max_len_a: float, max_len_b: int) -> int:
    """fairseq's per-batch limit ``a * src_len + b`` (``src_len`` = longest source incl. EOS, capped at 1023
    like fairseq's default positions). Both count tokens before EOS: at the limit fairseq appends EOS,
    CTranslate2 just stops (same tokens; only the score of such a hypothesis differs)."""
    return min(int(max_len_a * (max(batch_lengths) + 1) + max_len_b), 1023)


def search(translator, source: List[List[str]], beam: int, max_len: int, min_len: int = 1, use_vmap: bool = False,
           scores: bool = False, length_penalty: float = 1.0):
    """CTranslate2 beam search of one batch, as every decoder here runs it: the best hypothesis only, sources
    never truncated (fairseq does not truncate them), ``min_len``-``max_len`` tokens before EOS, scores
    normalised by length ** ``length_penalty`` (fairseq's ``--lenpen``).

    A translator loaded with ``parallel_batches`` P > 1 (:func:`load_translator`) gets the batch cut into P
    length-sorted parts of at most ``ceil(len(source) / P)`` sentences, which its P workers decode at once.
    The hypotheses are those of the whole batch, except with ``use_vmap``: a shortlist's candidate set is
    the union over what is decoded together, so each part gets a smaller one of its own.
    """
    return translator.translate_batch(source, beam_size=beam, num_hypotheses=1, max_input_length=0,
                                      min_decoding_length=min_len, max_decoding_length=max_len, use_vmap=use_vmap,
                                      return_scores=scores, length_penalty=length_penalty,
                                      max_batch_size=part_size(len(source), translator))


def part_size(sentences: int, translator) -> int:
    """``max_batch_size`` that splits ``sentences`` evenly over the translator's workers (0: no split)."""
    workers = translator.num_translators
    return 0 if workers == 1 else -(-sentences // workers)


def check_parallel_batches(parallel_batches: int, threads: int) -> None:
    """A ``ValueError`` unless ``parallel_batches`` workers can share ``threads`` evenly (at least one each)."""
    if parallel_batches < 1 or threads % parallel_batches:
        raise ValueError(f"{parallel_batches} parallel batches cannot share {threads} threads evenly: choose a "
                         "divisor of the thread count (each parallel batch needs at least one thread)")


def translate(translator, sources: List[List[str]], batches: List[List[int]], beam: int, max_len_a: float,
              max_len_b: int, use_vmap: bool = False) -> Dict[int, Tuple[List[str], float]]:
    """Beam search over ``batches``; returns ``{index: (tokens, score)}`` (score: length-normalized log-prob).

    ``use_vmap``: restrict each batch's output vocabulary to the model's stored shortlist (``vmap.txt``).
    """
    out = {}
    for batch in batches:
        limit = max_decoding_length([len(sources[i]) for i in batch], max_len_a, max_len_b)
        results = search(translator, [sources[i] for i in batch], beam, limit, use_vmap=use_vmap, scores=True)
        for index, result in zip(batch, results):
            out[index] = (result.hypotheses[0], float(result.scores[0]))
    return out


def load_translator(model_dir: str, threads: int, device: str = "cpu", compute_type: str = "default",
                    parallel_batches: int = 1):
    """A ``ctranslate2.Translator`` on ``threads`` CPU threads, as ``parallel_batches`` workers of
    ``threads / parallel_batches`` threads each (CTranslate2's ``inter_threads`` and ``intra_threads``).

    One worker with every thread parallelises inside each operation; several workers decode parts of a
    batch side by side (:func:`search` splits it), one thread each. On this project's 2-core machine the
    second way was faster at every batch size, by far for a single sentence
    (docs/results/decode-speed-paper-sizes.md).
    """
    check_parallel_batches(parallel_batches, threads)
    import ctranslate2

    try:
        return ctranslate2.Translator(model_dir, device=device, compute_type=compute_type,
                                      inter_threads=parallel_batches, intra_threads=threads // parallel_batches)
    except RuntimeError as exc:  # a damaged or truncated model.bin, an unusable device
        raise InputError(f"cannot load the CTranslate2 model {model_dir} ({' '.join(str(exc).split())}); if its "
                         "model.bin is damaged or incomplete, export it again (pet-export ctranslate2 ... --force)"
                         ) from None


