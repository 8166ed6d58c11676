"""Reading fairseq checkpoints and stripping them down to what inference needs.

Every tool reads a checkpoint here: :func:`read_checkpoint` (students, teachers, unrolled
checkpoints: torch's safe loading, the file as written) and :func:`read_teacher_checkpoint`
(the distillation task's teacher and the Kronecker initialisation: fairseq's
``load_checkpoint_to_cpu``, which upgrades old checkpoints). Either gives one line naming the
file for anything that is not a fairseq checkpoint. The language-pair and dictionary checks
against a data-bin are :mod:`pet_fairseq.core.checks`'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pet_fairseq.core.errors import ConfigError, InputError

#: Top-level checkpoint keys that loading a model for inference needs.
#: ``optimizer_history`` and ``extra_state`` are reduced to the small parts that fairseq's
#: ``checkpoint_utils._upgrade_state_dict`` reads; everything else (``last_optimizer_state``,
#: ``criterion`` with the KD projections, meters, EMA copies, ...) is training-only.
INFERENCE_KEYS = ("args", "cfg", "model", "task_state")
_HISTORY_KEYS = ("criterion_name", "optimizer_name", "lr_scheduler_state", "num_updates")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a fairseq checkpoint on the CPU, or raise :class:`InputError` saying why not.

    Uses torch's safe ``weights_only`` loading; ``pet_fairseq.compat`` allow-lists what fairseq
    pickles. A file that is missing, not a torch file, or a torch file without fairseq's
    ``model`` and ``cfg``/``args`` entries gets a message naming the file.
    """
    import pet_fairseq  # noqa: F401  (allow-lists fairseq's pickled config objects)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, KeyError, struct.error, ... for non-torch files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first_line = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise InputError(
            f"{path} is not a fairseq checkpoint (torch.load failed: {first_line}); "
            "pass a checkpoint written by fairseq-train, e.g. checkpoints/checkpoint_best.pt"
        ) from exc
    _require_fairseq_layout(state, path)
    return state


def _require_fairseq_layout(state: Any, path: Path) -> None:
    if not isinstance(state, dict):
        raise InputError(
            f"{path} is not a fairseq checkpoint: it holds a {type(state).__name__}, "
            "not a dict with 'model' and 'cfg' entries"
        )
    has_config = state.get("cfg") is not None or state.get("args") is not None
    if "model" not in state or not has_config:
        keys = ", ".join(sorted(map(str, state))[:8]) or "none"
        raise InputError(
            f"{path} is not a fairseq checkpoint: expected 'model' and 'cfg' (or 'args') entries, "
            f"found keys: {keys}"
        )


def read_teacher_checkpoint(path: str) -> dict:
    """Load a teacher checkpoint on the CPU, or raise a ValueError saying in plain words what the file is.

    With fairseq's ``load_checkpoint_to_cpu``, as ``fairseq-train`` loads one: a checkpoint of an
    older fairseq is upgraded (``args`` become ``cfg``). The error is a :class:`ConfigError`: the
    teacher is an option of the distillation task.
    """
    from fairseq import checkpoint_utils

    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as err:  # torch/pickle raise many types for a non-checkpoint file
        try:
            torch.load(path, map_location="cpu")
        except Exception:
            raise ConfigError(
                f"teacher checkpoint {path!r} is not a fairseq checkpoint (torch could not unpickle it): "
                "pass the .pt file written by fairseq-train, e.g. checkpoints/teacher/checkpoint_best.pt"
            ) from err
        raise ConfigError(
            f"teacher checkpoint {path!r} is a torch file but fairseq cannot read it as a checkpoint "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}): "
            "pass the .pt file written by fairseq-train"
        ) from err
    if not isinstance(state, dict) or state.get("cfg") is None or "model" not in state:
        raise ConfigError(
            f"teacher checkpoint {path!r} is a torch file but not a fairseq checkpoint (no 'model' and 'cfg' "
            "entries): pass the .pt file written by fairseq-train"
        )
    return state


def inference_state(state: dict[str, Any]) -> dict[str, Any]:
    """The subset of a loaded checkpoint that ``load_model_ensemble_and_task`` needs.

    Tensors are not copied, so tensors shared inside ``state["model"]`` stay shared (and are
    written once by ``torch.save``).
    """
    stripped = {key: state[key] for key in INFERENCE_KEYS if key in state}
    history = state.get("optimizer_history") or [{}]
    stripped["optimizer_history"] = [{k: v for k, v in history[-1].items() if k in _HISTORY_KEYS}]
    extra = state.get("extra_state") or {}
    stripped["extra_state"] = {"train_iterator": extra.get("train_iterator")}
    return stripped


def save_inference_state(state: dict[str, Any], out_path: str | os.PathLike) -> int:
    """Write :func:`inference_state` of a loaded checkpoint to ``out_path``; return its size in bytes."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(inference_state(state), out_path)
    return out_path.stat().st_size


def strip_for_inference(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Write ``ckpt_path`` without optimizer, criterion and other training-only state.

    The result loads with ``fairseq.checkpoint_utils.load_model_ensemble_and_task`` and
    ``fairseq-generate`` like the original. Returns the size of the written file in bytes.
    """
    return save_inference_state(read_checkpoint(ckpt_path), out_path)
