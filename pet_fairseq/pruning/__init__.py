"""Greedy layer pruning of encoder-decoder checkpoints.

Entry point: ``python -m pet_fairseq.pruning`` (or ``scripts/prune_layers.sh``); see docs/pruning.md.

* :mod:`~pet_fairseq.pruning.surgery` -- remove depths from a checkpoint (config, PET layer plans,
  weights) or, temporarily, from a loaded model (:func:`skipping`)
* :mod:`~pet_fairseq.pruning.scoring` -- validation NLL or BLEU on (part of) a binarized subset
* :mod:`~pet_fairseq.pruning.greedy` -- the search: greedy (joint or one side first) or top-layer dropping
* :mod:`~pet_fairseq.pruning.cli` -- command line, partial results, resuming, greedy-vs-top table

Importing this package does not import fairseq; the modules that need it import it themselves.
"""

from pet_fairseq.pruning.errors import PruningError
from pet_fairseq.pruning.greedy import Candidate, Step, check_targets, search
from pet_fairseq.pruning.surgery import (
    SIDES,
    architecture_flags,
    keep_depths,
    layer_map,
    prune_state,
    remove_depth,
    save_checkpoint,
    skipping,
    stack_layout,
)

__all__ = [
    "SIDES",
    "Candidate",
    "PruningError",
    "Step",
    "architecture_flags",
    "check_targets",
    "keep_depths",
    "layer_map",
    "prune_state",
    "remove_depth",
    "save_checkpoint",
    "search",
    "skipping",
    "stack_layout",
]
