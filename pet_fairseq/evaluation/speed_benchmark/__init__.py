"""Decode speed of named architectures at their real sizes, fairseq and CTranslate2 side by side.

    python -m pet_fairseq.evaluation.speed_benchmark \\
        --archs transformer_iwslt_de_en,pet_iwslt_de_en,pet_deep_shallow_iwslt_de_en --json speed.json

At a fixed output length, decoding time does not depend on the weights, so the models are built
with random initialisation (``fairseq-train``'s argument parsing and ``build_model``) on a
dictionary: by default the joined IWSLT'14 BPE dictionary counted from ``../shared/data``'s
``iwslt14-de-en/bpe10k`` (valid + test, both sides, padded to a multiple of 8 like
``fairseq-preprocess``), and the sources are the first ``--sentences`` lines of its ``test.de``.
Every model, in every engine, generates exactly ``--output-length`` tokens (EOS included) per
sentence (fairseq: ``min_len = max_len``; CTranslate2: ``min_decoding_length = max_decoding_length``),
which :func:`~pet_fairseq.evaluation.translators.decode_pass` checks.

Each model is also saved as a checkpoint and converted with the export's conversion
(:func:`pet_fairseq.core.ctranslate2.convert.convert`, ``--quantization int8`` by default), then
decoded with CTranslate2 in a torch-free worker process per model
(:class:`~pet_fairseq.evaluation.translators.CTranslate2Translator`; in one process, CTranslate2's and
torch's OpenMP threads slow each other): over the whole vocabulary (engine ``ctranslate2``) and with a
lexical vocabulary shortlist (engine ``ctranslate2-shortlist``; ``python -m pet_fairseq.export
shortlist`` counted on ``--shortlist-bitext``, by default the IWSLT'14 valid set, disjoint from the
timed test sentences). ``--ct2-parallel-batches 1,2`` times each CTranslate2 engine both ways: every
batch decoded by one worker on all ``--threads``, and cut into two parts decoded side by side by two
workers on half the threads each (CTranslate2's ``inter_threads``, its setting for throughput).
Modes: batch ``--batch-size`` throughput (target tokens/s) and batch-1 latency (ms per sentence),
each with every beam of ``--beams`` (default 5 and greedy). In each mode all models and engines are
timed on the same batches, interleaved (:func:`~pet_fairseq.core.speed.measure_side_by_side`),
median of ``--repeats``. Ratios are to the first model in the first engine (>1 = faster). A profiler
run (:mod:`~pet_fairseq.evaluation.decode_profile`) splits each fairseq model's beam-search time into
encoder, decoder layers, output projection and search bookkeeping.

Prints Markdown tables; ``--json`` writes every figure.

One idea per module:

* :mod:`~pet_fairseq.evaluation.speed_benchmark.cli` -- the options, their checks and ``main``
  (``pet-speed-benchmark``, ``python -m pet_fairseq.evaluation.speed_benchmark``)
* :mod:`~pet_fairseq.evaluation.speed_benchmark.inputs` -- what is decoded: the dictionary, the
  source sentences, their batches, the shortlist's bitext
* :mod:`~pet_fairseq.evaluation.speed_benchmark.models` -- the models timed: built with random
  weights, written as checkpoints, converted to CTranslate2, one translator per engine
* :mod:`~pet_fairseq.evaluation.speed_benchmark.timing` -- the run: modes, side-by-side timing,
  ratios, the profile, the report
* :mod:`~pet_fairseq.evaluation.speed_benchmark.tables` -- the report as Markdown tables

``main`` is also importable from here: console scripts installed before the package was split call
``pet_fairseq.evaluation.speed_benchmark:main``.
"""

from pet_fairseq.evaluation.speed_benchmark.cli import main

__all__ = ["main"]
