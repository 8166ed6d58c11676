"""Compare a teacher with its students: BLEU, memory and decode speed.

Entry point: ``python -m pet_fairseq.evaluation.compare`` (or ``scripts/evaluate.sh``).
One concept per module:

* :mod:`~pet_fairseq.evaluation.checkpoint` -- read checkpoints, :func:`strip_for_inference`
* :mod:`~pet_fairseq.evaluation.checks` -- clear errors for bad data-bins and dictionaries
* :mod:`~pet_fairseq.evaluation.memory` -- unique parameters, peak RSS / GPU memory
* :mod:`~pet_fairseq.evaluation.speed` -- warm-up + median-of-repeats timing, several decoders interleaved
  (the one timing loop of every speed figure)
* :mod:`~pet_fairseq.evaluation.translators` -- one interface for fairseq and CTranslate2 decoding, forced
  output lengths
* :mod:`~pet_fairseq.evaluation.decode_profile` -- where fairseq's decode time goes (encoder, decoder layers,
  output projection, beam search)
* :mod:`~pet_fairseq.evaluation.bleu` -- detokenized sacreBLEU and IWSLT-style tokenized BLEU
* :mod:`~pet_fairseq.evaluation.postprocess` -- de-BPE and detokenization of decoder output
* :mod:`~pet_fairseq.evaluation.jobs` -- a decoding subprocess's job, its text files and their BLEU
* :mod:`~pet_fairseq.evaluation.decode` -- the per-model decoding subprocess
* :mod:`~pet_fairseq.evaluation.ct2_model` -- CTranslate2 model directories (``python -m pet_fairseq.export
  ctranslate2``): recognised, checked against the data-bin, evaluated like a checkpoint
* :mod:`~pet_fairseq.evaluation.ct2_worker` -- the torch-free decoding subprocess for a CTranslate2 model
* :mod:`~pet_fairseq.evaluation.runner` -- launching that subprocess from the parent
* :mod:`~pet_fairseq.evaluation.ratios` -- figures relative to the first (reference) model
* :mod:`~pet_fairseq.evaluation.environment` -- versions, threads, device, CPU model
* :mod:`~pet_fairseq.evaluation.report` -- Markdown table, JSON and PNG
* :mod:`~pet_fairseq.evaluation.compare` -- command line
* :mod:`~pet_fairseq.evaluation.length_benchmark` -- decode time against input length (own command line)
* :mod:`~pet_fairseq.evaluation.speed_benchmark` -- named architectures at their real sizes, fairseq and
  CTranslate2 side by side, throughput, latency and profile (own command line)

Importing this package does not import fairseq; the modules that need it import it themselves.
Nothing here imports :mod:`pet_fairseq.export` (export builds on evaluation, not the reverse).
"""

from pet_fairseq.evaluation.checkpoint import inference_state, read_checkpoint, strip_for_inference
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.memory import count_unique_elements, unique_parameter_count
from pet_fairseq.evaluation.speed import SpeedResult, measure_speed, speed_ratio

__all__ = [
    "EvaluationError",
    "SpeedResult",
    "count_unique_elements",
    "inference_state",
    "measure_speed",
    "read_checkpoint",
    "speed_ratio",
    "strip_for_inference",
    "unique_parameter_count",
]
