"""Removing depths from a Transformer stack: in a checkpoint (for good) or in a live model (to score).

A *depth* is one position of an encoder/decoder stack, counted from 0 at the bottom. In a
plain fairseq ``transformer`` checkpoint depth ``d`` is the layer stored as ``{side}.layers.d.*``.
In a PET checkpoint depth ``d`` is step ``d`` of the side's layer plan (``0,1,0~,1~``), which
applies the unique layer stored as ``{side}.unique_layers.N.*``; removing a depth removes that
step, drops unique layers no step uses any more and renumbers the rest (plan and weights), so
the result is an ordinary checkpoint whose config says what its weights are.
"""

from __future__ import annotations

import copy
import os
import re
from argparse import Namespace
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pet_fairseq.pruning.errors import PruningError
from pet_fairseq.sharing import LayerPlan, LayerStep

SIDES = ("encoder", "decoder")
_LAYER_KEY = re.compile(r"^(encoder|decoder)\.(layers|unique_layers)\.(\d+)\.(.+)$")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Namespace):
        return getattr(cfg, key, default)
    return cfg.get(key, default) if hasattr(cfg, "get") else default


def _set(cfg: Any, key: str, value: Any) -> None:
    if isinstance(cfg, Namespace):
        setattr(cfg, key, value)
    else:
        cfg[key] = value


def model_configs(state: Mapping[str, Any]) -> list[Any]:
    """The model configs of a checkpoint: ``cfg.model`` and/or the legacy ``args`` (both kept in step)."""
    configs = []
    cfg = state.get("cfg")
    if cfg is not None and _get(cfg, "model") is not None:
        configs.append(_get(cfg, "model"))
    if state.get("args") is not None:
        configs.append(state["args"])
    if not configs:
        raise PruningError("the checkpoint has neither 'cfg.model' nor 'args': it is not a fairseq model checkpoint")
    return configs


@dataclass(frozen=True)
class StackLayout:
    """How one side of a checkpoint stores its depths."""

    side: str
    plan: LayerPlan  # the step applied at each depth (0,1,...,n-1 for a plain stack)
    shared: bool  # True: PET weights under {side}.unique_layers.N; False: {side}.layers.N
    explicit_plan: bool  # the config names a --{side}-layer-plan

    @property
    def depth(self) -> int:
        return self.plan.depth

    @property
    def weight_prefix(self) -> str:
        return f"{self.side}.{'unique_layers' if self.shared else 'layers'}."


def stack_layout(state: Mapping[str, Any], side: str) -> StackLayout:
    """Read and check how ``side`` ('encoder'/'decoder') of a loaded checkpoint stores its layers."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    weights = state["model"]
    stored = {m.group(2) for m in map(_LAYER_KEY.match, weights) if m and m.group(1) == side}
    if not stored:
        raise PruningError(
            f"the checkpoint has no {side} layer weights ('{side}.layers.N.*' or '{side}.unique_layers.N.*'): "
            "pass a fairseq 'transformer' or 'pet_transformer' translation checkpoint"
        )
    cfg = model_configs(state)[0]
    if _get(cfg, f"{side}_layers_to_keep"):
        raise PruningError(
            f"the checkpoint sets --{side}-layers-to-keep; prune a checkpoint trained without it "
            "(or re-save it with only the kept layers first)"
        )
    shared = "unique_layers" in stored
    plan_text = _get(cfg, f"{side}_layer_plan", "") or ""
    layers = _get(cfg, f"{side}_layers")
    try:
        plan = LayerPlan.parse(plan_text, f"{side}_layer_plan") if plan_text else LayerPlan.unshared(int(layers))
    except (TypeError, ValueError) as err:
        raise PruningError(f"cannot read the {side} depth from the checkpoint's config: {err}") from err
    stored_indices = {int(m.group(3)) for m in map(_LAYER_KEY.match, weights) if m and m.group(1) == side}
    if stored_indices != set(range(plan.num_unique)):
        raise PruningError(
            f"the checkpoint's {side} weights hold layers {sorted(stored_indices)} but its config describes "
            f"{plan.num_unique} ({side}_layers={layers}, {side}_layer_plan={plan_text!r}); the file is inconsistent"
        )
    return StackLayout(side, plan, shared, bool(plan_text))


def _check_keep(layout: StackLayout, keep: Sequence[int]) -> list[int]:
    keep = list(keep)
    if not keep:
        raise PruningError(f"cannot remove every {layout.side} layer: keep at least 1 of {layout.depth}")
    if sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= layout.depth:
        raise PruningError(f"{layout.side} depths to keep {keep} must be increasing and within 0..{layout.depth - 1}")
    return keep


def keep_depths(state: Mapping[str, Any], side: str, keep: Sequence[int]) -> dict[str, Any]:
    """A copy of checkpoint ``state`` whose ``side`` runs only the depths ``keep`` (increasing, 0-based).

    Weight tensors are shared with ``state`` (not copied); the config is deep-copied and updated:
    ``{side}_layers`` and, for PET, ``{side}_layer_plan`` with unused unique layers dropped and the
    remaining ones renumbered in order, together with their ``{side}.unique_layers.N`` weights.
    """
    layout = stack_layout(state, side)
    keep = _check_keep(layout, keep)
    steps = [layout.plan.steps[d] for d in keep]
    if layout.shared:
        used = sorted({s.index for s in steps})
        renumber = {old: new for new, old in enumerate(used)}
        new_plan = LayerPlan(tuple(LayerStep(renumber[s.index], s.swap_qk) for s in steps))
    else:
        renumber = {old: new for new, old in enumerate(keep)}
        new_plan = LayerPlan.unshared(len(keep))

    weights = {}
    for key, tensor in state["model"].items():
        match = _LAYER_KEY.match(key)
        if match is None or match.group(1) != side:
            weights[key] = tensor
        elif int(match.group(3)) in renumber:
            weights[f"{side}.{match.group(2)}.{renumber[int(match.group(3))]}.{match.group(4)}"] = tensor

    new_state = {k: v for k, v in state.items() if k not in ("model", "cfg", "args")}
    new_state["model"] = weights
    new_state["cfg"] = copy.deepcopy(state.get("cfg"))
    new_state["args"] = copy.deepcopy(state.get("args"))
    plan_text = str(new_plan) if layout.explicit_plan or new_plan != LayerPlan.unshared(len(keep)) else ""
    for cfg in model_configs(new_state):
        _set(cfg, f"{side}_layers", len(keep))
        nested = _get(cfg, side)  # TransformerConfig-style configs keep a nested {side: {layers: N}}
        if nested is not None and not isinstance(nested, (str, int)) and _get(nested, "layers") is not None:
            _set(nested, "layers", len(keep))
        if layout.shared or _get(cfg, f"{side}_layer_plan") is not None:
            _set(cfg, f"{side}_layer_plan", plan_text)
    return new_state


def remove_depth(state: Mapping[str, Any], side: str, depth: int) -> dict[str, Any]:
    """A copy of ``state`` without depth ``depth`` (0-based) of ``side``."""
    layout = stack_layout(state, side)
    if not 0 <= depth < layout.depth:
        raise PruningError(f"{side} depth {depth} does not exist: the {side} has depths 0..{layout.depth - 1}")
    return keep_depths(state, side, [d for d in range(layout.depth) if d != depth])


def prune_state(state: Mapping[str, Any], removed: Mapping[str, Iterable[int]]) -> dict[str, Any]:
    """A copy of ``state`` without the depths ``removed[side]`` (0-based depths of ``state``) of each side."""
    for side in SIDES:
        gone = set(removed.get(side, ()))
        if gone:
            depth = stack_layout(state, side).depth
            state = keep_depths(state, side, [d for d in range(depth) if d not in gone])
    return dict(state)


def layer_map(kept: Sequence[int]) -> str:
    """``pet_kd`` layer map from the original (teacher) layers to the kept ones: kept ``[0, 2, 5]`` -> ``1:1,3:2,6:3``.

    Teacher layer ``k+1`` (1-based, 0 = embeddings) is the original of the student's depth ``j+1``.
    """
    return ",".join(f"{k + 1}:{j + 1}" for j, k in enumerate(kept))


def architecture_flags(state: Mapping[str, Any]) -> list[str]:
    """The fairseq-train flags that change when fine-tuning a pruned checkpoint (depths, layer plans).

    Add them to the original model's architecture flags (``--arch``, widths, ...).
    """
    flags = []
    for side in SIDES:
        layout = stack_layout(state, side)
        flags += [f"--{side}-layers", str(layout.depth)]
        if layout.explicit_plan:
            flags += [f"--{side}-layer-plan", str(layout.plan)]
    return flags


def architecture_name(state: Mapping[str, Any]) -> str:
    """The ``--arch`` a checkpoint was trained with (e.g. ``transformer``, ``pet_iwslt_de_en``)."""
    cfg = model_configs(state)[0]
    return str(_get(cfg, "arch") or _get(cfg, "_name") or "ARCH")


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write an inference checkpoint (no optimizer/criterion state) atomically: a reader never sees half a file."""
    import torch

    from pet_fairseq.core.checkpoint import inference_state

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    stripped = inference_state(dict(state))
    # as fairseq-train writes for a criterion without parameters: --finetune-from-model reads this key, and
    # a KD criterion's projections (if the original had them) would not fit the pruned depths anyway
    stripped["criterion"] = None
    if stripped["extra_state"].get("train_iterator") is None:  # no None: fairseq's loader fills in a missing one
        stripped["extra_state"] = {}
    torch.save(stripped, tmp)
    os.replace(tmp, path)
    return path


@contextmanager
def skipping(model: Any, skip: Mapping[str, Iterable[int]]) -> Iterator[Any]:
    """Run ``model`` without the depths ``skip[side]`` (0-based) inside the ``with`` block; restore them after.

    The encoder/decoder's ``layers`` list (fairseq layers, or PET's per-depth views) is replaced
    by the kept entries, so the model computes exactly what the pruned checkpoint computes,
    including incremental decoding. No weights are copied. (Any LayerDrop is not applied inside.)
    """
    from torch import nn

    saved: list[tuple[Any, Any, int]] = []
    try:
        for side in SIDES:
            gone = set(skip.get(side, ()))
            if not gone:
                continue
            stack = getattr(model, side)
            layers = stack.layers
            if not gone <= set(range(len(layers))) or len(gone) >= len(layers):
                raise PruningError(f"cannot skip {side} depths {sorted(gone)} of {len(layers)}")
            saved.append((stack, layers, stack.num_layers))
            kept = nn.ModuleList(layer for d, layer in enumerate(layers) if d not in gone)
            stack.layers = kept
            stack.num_layers = len(kept)
        yield model
    finally:
        for stack, layers, num_layers in reversed(saved):
            stack.layers = layers
            stack.num_layers = num_layers

