"""Compare a teacher with its students: BLEU, memory and decode speed.

Entry point: ``python -m pet_fairseq.evaluation.compare`` (or ``scripts/evaluate.sh``).
One concept per module:

* :mod:`~pet_fairseq.evaluation.memory` -- unique parameters, peak RSS / GPU memory
* :mod:`~pet_fairseq.evaluation.translators` -- one interface for fairseq and CTranslate2 decoding, forced
  output lengths
* :mod:`~pet_fairseq.evaluation.decode_profile` -- where fairseq's decode time goes (encoder, decoder layers,
  output projection, beam search)
* :mod:`~pet_fairseq.evaluation.jobs` -- a decoding subprocess's job, its text files and their BLEU
* :mod:`~pet_fairseq.evaluation.decode` -- the per-model decoding subprocess
* :mod:`~pet_fairseq.evaluation.ct2_backend` -- CTranslate2 model directories (``python -m pet_fairseq.export
  ctranslate2``) checked against the data-bin and evaluated like a checkpoint
* :mod:`~pet_fairseq.evaluation.ct2_worker` -- the torch-free decoding subprocess for a CTranslate2 model
* :mod:`~pet_fairseq.evaluation.runner` -- launching that subprocess from the parent
* :mod:`~pet_fairseq.evaluation.ratios` -- figures relative to the first (reference) model
* :mod:`~pet_fairseq.evaluation.environment` -- versions, threads, device, CPU model
* :mod:`~pet_fairseq.evaluation.report` -- Markdown table, JSON and PNG
* :mod:`~pet_fairseq.evaluation.compare` -- command line
* :mod:`~pet_fairseq.evaluation.length_benchmark` -- decode time against input length (own command line)
* :mod:`~pet_fairseq.evaluation.speed_benchmark` -- named architectures at their real sizes, fairseq and
  CTranslate2 side by side, throughput, latency and profile (own command line; a package: its options,
  inputs, models, timing and tables)
* :mod:`~pet_fairseq.evaluation.training_cost` -- seconds per update of fairseq-train logs (own command line)

What the other tools share with this one is the core's: checkpoint reading and stripping
(:mod:`pet_fairseq.core.checkpoint`), the data-bin checks (:mod:`pet_fairseq.core.checks`),
fairseq-generate's decoding (:mod:`pet_fairseq.core.decode`), the timing loop
(:mod:`pet_fairseq.core.speed`), BLEU (:mod:`pet_fairseq.core.bleu`), de-BPE and detokenization
(:mod:`pet_fairseq.core.postprocess`) and the CTranslate2 runtime (:mod:`pet_fairseq.core.ctranslate2`).

Importing this package does not import fairseq; the modules that need it import it themselves.
Nothing here imports another tool (:mod:`pet_fairseq.export` included).
"""

from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.memory import count_unique_elements, unique_parameter_count

__all__ = [
    "EvaluationError",
    "count_unique_elements",
    "unique_parameter_count",
]
