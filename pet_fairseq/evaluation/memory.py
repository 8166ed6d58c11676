"""Memory figures: unique parameters (shared tensors once), peak resident and GPU memory."""

from __future__ import annotations

import resource
import sys
from typing import Iterable

import torch


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr())


def count_unique_elements(tensors: Iterable[torch.Tensor]) -> int:
    """Number of distinct tensor elements, counting memory that several tensors share once.

    Tensors are grouped by the storage they live in (``untyped_storage().data_ptr()``); within a
    storage the element ranges ``[offset, offset + numel)`` of contiguous tensors are merged, so
    the same tensor registered twice, two views of one flat buffer, or two modules holding the same
    ``Parameter`` all count once. Non-contiguous views count their full span (an upper bound).
    """
    spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for tensor in tensors:
        if tensor.numel() == 0:
            continue
        start = tensor.storage_offset()
        if tensor.is_contiguous():
            end = start + tensor.numel()
        else:
            end = start + 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
        spans.setdefault(_storage_key(tensor), []).append((start, end))
    return sum(_merged_length(ranges) for ranges in spans.values())


def _merged_length(ranges: list[tuple[int, int]]) -> int:
    total, current_start, current_end = 0, None, None
    for start, end in sorted(ranges):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def _all_parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for _, p in module.named_parameters(remove_duplicate=False)]
    params += [v for v in module.state_dict(keep_vars=True).values() if isinstance(v, torch.nn.Parameter)]
    return params


def unique_parameter_count(module: torch.nn.Module) -> int:
    """Parameters of ``module`` with every shared tensor counted once (buffers excluded).

    Looks at ``named_parameters(remove_duplicate=False)`` and the ``Parameter`` values of
    ``state_dict(keep_vars=True)`` and de-duplicates by storage, so it does not depend on how a
    sharing scheme registers its layers.
    """
    return count_unique_elements(_all_parameters(module))


def registered_parameters(module: torch.nn.Module) -> int:
    """Parameters counted once per name they are registered under (tied weights count twice).

    A layer that a model reuses without registering it again (PET's reused layers) counts once
    here too, so this is not the cost of unsharing; it shows ties made through attributes.
    """
    return sum(p.numel() for _, p in module.named_parameters(remove_duplicate=False))


def peak_rss_bytes() -> int:
    """Peak resident set size of the current process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def current_rss_bytes() -> int:
    """Resident set size of the current process now, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_gpu_bytes(device: torch.device) -> int | None:
    """``torch.cuda.max_memory_allocated`` for a CUDA device, ``None`` for any other device."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))
