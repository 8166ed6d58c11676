"""The one place that knows about torch / fairseq version quirks."""

from __future__ import annotations

import argparse

import numpy as np
import torch


def _numpy_reconstructors() -> list:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return [_reconstruct, scalar]


def allow_fairseq_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (the default since torch 2.6) read fairseq checkpoints.

    fairseq checkpoints pickle an ``argparse.Namespace`` (``args``) and, with ``--eval-bleu``,
    numpy arrays and scalars in the saved meters. These are allow-listed instead of turning safe loading
    off process-wide with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 loads with weights_only=False anyway
        return
    dtype_classes = [type(np.dtype(code)) for code in "?bhilqBHILQefdg"]
    add_safe_globals([argparse.Namespace, *_numpy_reconstructors(), np.ndarray, np.dtype, *dtype_classes])


def keep_last_partial_batch() -> None:
    """Stop fairseq 0.12 from silently dropping the last batch of every epoch and test set.

    ``fairseq.data.data_utils.batch_by_size`` discards a final batch whose size is not a
    multiple of ``--required-batch-size-multiple`` (default 8; fairseq issue #5036), so
    ``fairseq-generate`` translates e.g. 96 of 100 test sentences and BLEU is computed on the
    wrong set. The dropped batch is exactly the indices after the last kept batch; we append it.
    """
    from fairseq.data import data_utils

    original = data_utils.batch_by_size
    if getattr(original, "_pet_keeps_last_batch", False):
        return

    def batch_by_size(indices, num_tokens_fn, *args, **kwargs):
        batches = original(indices, num_tokens_fn, *args, **kwargs)
        fixed_shapes = kwargs.get("fixed_shapes", args[5] if len(args) > 5 else None)
        covered = sum(len(b) for b in batches)
        if fixed_shapes is None and covered < len(indices):
            batches = list(batches) + [np.asarray(indices[covered:], dtype=np.int64)]
        return batches

    batch_by_size._pet_keeps_last_batch = True
    batch_by_size.__doc__ = original.__doc__
    data_utils.batch_by_size = batch_by_size



def explain_unreadable_checkpoints() -> None:
    """Turn fairseq's traceback for a file that is not a checkpoint (``--path notes.txt``) into one line naming it.

    ``checkpoint_utils.load_checkpoint_to_cpu`` lets torch's error through (``UnpicklingError: Weights only load
    failed ... file an issue``, 60 lines deep). The wrapped function calls fairseq's; only when that fails does it
    read the file again with :func:`pet_fairseq.core.checkpoint.read_checkpoint`, which raises a one-line
    ``InputError`` for a missing file or one that is not a fairseq checkpoint. Any other failure is fairseq's own,
    re-raised unchanged.
    """
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_pet_explains_unreadable", False):
        return

    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return original(path, *args, **kwargs)
        except Exception:
            from pet_fairseq.core.checkpoint import read_checkpoint

            read_checkpoint(path)  # raises InputError naming the file when it is missing or not a checkpoint
            raise

    load_checkpoint_to_cpu._pet_explains_unreadable = True
    load_checkpoint_to_cpu.__doc__ = original.__doc__
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def check_decoded_direction() -> None:
    """Refuse to decode a model with a task of the other direction (``fairseq-generate -s en -t de`` on a de->en model).

    fairseq builds the task from the command line (``-s/-t``, or the data-bin's pair) and loads the models without
    comparing, so a de->en model is fed the English side and scored against German, without a word. The wrapped
    ``checkpoint_utils.load_model_ensemble_and_task`` compares the direction the loaded checkpoint records
    (``cfg.task.source_lang/target_lang``) with the task it is loaded for, and raises a one-line ``ConfigError``.
    Without a task, or when either side records no language, nothing is checked.
    """
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_model_ensemble_and_task
    if getattr(original, "_pet_checks_direction", False):
        return

    def load_model_ensemble_and_task(filenames, arg_overrides=None, task=None, *args, **kwargs):
        ensemble, cfg, loaded_task = original(filenames, arg_overrides, task, *args, **kwargs)
        asked = getattr(task, "cfg", None)
        if asked is not None and cfg is not None and cfg.get("task") is not None:
            from pet_fairseq.core.direction import check_direction
            from pet_fairseq.core.errors import ConfigError

            recorded = (cfg.task.get("source_lang"), cfg.task.get("target_lang"))
            check_direction(", ".join(str(f) for f in filenames), recorded, getattr(asked, "source_lang", None),
                            getattr(asked, "target_lang", None), ConfigError)
        return ensemble, cfg, loaded_task

    load_model_ensemble_and_task._pet_checks_direction = True
    load_model_ensemble_and_task.__doc__ = original.__doc__
    checkpoint_utils.load_model_ensemble_and_task = load_model_ensemble_and_task


def fix_distributed_training() -> None:
    """Make fairseq 0.12 run one data-parallel job under torchrun, with its own launcher and on CPU.

    Replaces, by the versions in :mod:`pet_fairseq.distributed` (which says what fairseq gets
    wrong): ``fairseq.distributed.utils.call_main`` (what ``fairseq-train`` calls once the
    arguments, and so this plugin, are loaded), ``fairseq.models.DistributedFairseqModel`` (what
    the trainer wraps the model and a criterion with parameters in) and
    ``fairseq.distributed.utils._broadcast_object_slow`` (how rank 0 sends the checkpoint it
    loaded to the other ranks when a run resumes).
    """
    from fairseq import models
    from fairseq.distributed import utils as distributed_utils

    from pet_fairseq import distributed

    if not getattr(models.DistributedFairseqModel, "_pet_wrapper", False):
        models.DistributedFairseqModel = distributed.distributed_wrapper(models.DistributedFairseqModel)
    distributed_utils._broadcast_object_slow = distributed.broadcast_object_slow
    if not getattr(distributed_utils.call_main, "_pet_launch", False):
        distributed_utils.call_main = distributed.call_main_wrapper(distributed_utils.call_main)


def allow_bf16_without_tpu(cfg) -> None:
    """Let ``--bf16`` train in bfloat16 on GPUs (and CPUs) instead of requiring a TPU.

    fairseq 0.12's argument parsing turns ``--bf16`` into ``--tpu`` as well (its help says
    "implies --tpu"), so without ``torch_xla`` the trainer fails with ``'NoneType' object has no
    attribute 'xla_device'``. Its bfloat16 code paths (model, criterion and batches cast to
    bfloat16, an fp32 master copy in ``FP16Optimizer``) do not otherwise depend on the TPU, so
    when ``torch_xla`` is not installed the implied TPU flag is dropped.
    """
    import importlib.util
    import logging

    from omegaconf import open_dict

    if cfg.common.bf16 and cfg.common.tpu and importlib.util.find_spec("torch_xla") is None:
        logging.getLogger(__name__).info("--bf16 without torch_xla: training in bfloat16 on the GPU/CPU, not on a TPU")
        with open_dict(cfg.common):
            cfg.common.tpu = False
