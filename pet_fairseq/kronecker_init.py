"""Initialise a Kronecker-factored student from a trained teacher checkpoint.

    python -m pet_fairseq.kronecker_init TEACHER.pt STUDENT.pt --kronecker-ffn 4,4 \\
        [--kronecker-attention 2,2] [--kronecker-embeddings 2,2] \\
        [--encoder-layer-plan 0,1,0~,1~ --encoder-source-layers 2,5] [--data-bin DIR]

The student keeps the teacher's widths and heads (KroneckerBERT compresses the teacher's own
matrices); each factored weight starts as the nearest Kronecker product of the teacher's weight
(:meth:`KroneckerLinear.from_dense`), everything else is copied. Unique layer j of the student
starts from teacher layer ``--*-source-layers[j]`` (1-based; default: evenly spaced, top included).
Then fine-tune with ``fairseq-train ... --task pet_distillation --teacher-path TEACHER.pt
--criterion pet_kd --finetune-from-model STUDENT.pt`` and the same architecture options.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from typing import List, Optional

import torch
from fairseq import checkpoint_utils, tasks
from omegaconf import OmegaConf
from torch import nn

import pet_fairseq  # noqa: F401  (registers the model)
from pet_fairseq.core.checkpoint import read_teacher_checkpoint
from pet_fairseq.core.cli import command
from pet_fairseq.core.errors import ConfigError
from pet_fairseq.models.pet_transformer import PETTransformerModel
from pet_fairseq.modules.kronecker import KroneckerEmbedding, KroneckerLinear
from pet_fairseq.sharing import LayerPlan

logger = logging.getLogger("pet_fairseq.kronecker_init")


def source_layers(text: str, num_unique: int, teacher_layers: int, option: str) -> List[int]:
    """0-based teacher layer for each unique student layer (default: evenly spaced, ending at the top)."""
    if not text:
        return [round((j + 1) * teacher_layers / num_unique) - 1 for j in range(num_unique)]
    layers = [int(t) for t in text.split(",") if t.strip().isdigit()]
    if len(layers) != num_unique or not all(1 <= x <= teacher_layers for x in layers):
        raise ConfigError(f"{option} {text!r}: give {num_unique} teacher layers in 1..{teacher_layers}")
    return [x - 1 for x in layers]


def copy_module(student: nn.Module, teacher: nn.Module) -> float:
    """Copy ``teacher`` into ``student`` leaf by leaf; factored leaves get the nearest Kronecker product.

    Returns the largest relative Frobenius error of the factored weights (0 if none).
    """
    worst = 0.0
    for name, s_mod in student.named_modules():
        if isinstance(s_mod, (KroneckerLinear, KroneckerEmbedding)):
            t_mod = teacher.get_submodule(name)
            dense = KroneckerLinear.from_dense(t_mod.weight, tuple(s_mod.a.shape), getattr(t_mod, "bias", None))
            with torch.no_grad():
                s_mod.a.copy_(dense.a)
                s_mod.b.copy_(dense.b)
                if getattr(s_mod, "bias", None) is not None:
                    s_mod.bias.copy_(dense.bias)
            err = (t_mod.weight - dense.dense_weight()).norm() / t_mod.weight.norm()
            worst = max(worst, err.item())
        elif not list(s_mod.children()) and list(s_mod.parameters(recurse=False)):
            s_mod.load_state_dict(teacher.get_submodule(name).state_dict())
    return worst


def student_args(teacher_args: argparse.Namespace, opts: argparse.Namespace) -> argparse.Namespace:
    args = copy.deepcopy(teacher_args)
    args.arch = args._name = "pet_transformer"
    for side in ("encoder", "decoder"):
        plan = getattr(opts, f"{side}_layer_plan") or str(LayerPlan.unshared(getattr(teacher_args, f"{side}_layers")))
        setattr(args, f"{side}_layer_plan", plan)
        setattr(args, f"{side}_layers", LayerPlan.parse(plan, f"--{side}-layer-plan").depth)
    args.no_decoder_query_sharing = True  # the teacher's two query projections differ
    args.kronecker_ffn, args.kronecker_attention = opts.kronecker_ffn, opts.kronecker_attention
    args.kronecker_embeddings = opts.kronecker_embeddings
    return args


_ARCH_FLAGS = ("encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "encoder_layers",
               "encoder_layer_plan", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
               "decoder_layers", "decoder_layer_plan", "kronecker_ffn", "kronecker_attention", "kronecker_embeddings")
_ARCH_SWITCHES = ("no_decoder_query_sharing", "share_all_embeddings", "share_decoder_input_output_embed",
                  "encoder_normalize_before", "decoder_normalize_before")


def training_flags(args: argparse.Namespace) -> str:
    """The fairseq-train architecture flags that rebuild exactly this student."""
    flags = ["--arch pet_transformer"] + [f"--{k.replace('_', '-')} {getattr(args, k)}"
                                          for k in _ARCH_FLAGS if getattr(args, k, "")]
    return " ".join(flags + [f"--{k.replace('_', '-')}" for k in _ARCH_SWITCHES if getattr(args, k, False)])


def initialise(teacher_path: str, out_path: str, opts: argparse.Namespace) -> nn.Module:
    state = read_teacher_checkpoint(teacher_path)
    cfg = state["cfg"]
    if opts.data_bin:
        cfg.task.data = opts.data_bin
    task = tasks.setup_task(cfg.task)
    teacher = task.build_model(cfg.model)
    teacher.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    if not hasattr(teacher, "encoder") or not hasattr(teacher.encoder, "layers"):
        raise ConfigError(f"{teacher_path}: not a fairseq Transformer translation model")
    args = student_args(cfg.model, opts)
    student = PETTransformerModel.build_model(args, task)
    worst = 0.0
    for side in ("encoder", "decoder"):
        s_side, t_side = getattr(student, side), getattr(teacher, side)
        t_layers = list(getattr(t_side, "unique_layers", t_side.layers))
        sources = source_layers(getattr(opts, f"{side}_source_layers"), len(s_side.unique_layers), len(t_layers),
                                f"--{side}-source-layers")
        for j, src in enumerate(sources):
            worst = max(worst, copy_module(s_side.unique_layers[j], t_layers[src]))
            logger.info(f"{side} unique layer {j} <- teacher layer {src + 1}")
        outside = nn.ModuleDict({n: m for n, m in s_side.named_children() if n not in ("layers", "unique_layers")})
        worst = max(worst, copy_module(outside, t_side))
    saved_cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # plain containers, as fairseq saves
    saved_cfg["model"] = args
    state.update(cfg=saved_cfg, model=student.state_dict(), criterion=None, last_optimizer_state=None)
    state["extra_state"] = {}
    state["optimizer_history"] = state["optimizer_history"][-1:]
    checkpoint_utils.torch_persistent_save(state, out_path)
    t_params, s_params = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
    logger.info(f"wrote {out_path}: {s_params:,} unique parameters vs the teacher's {t_params:,} "
                f"({t_params / s_params:.1f}x fewer); worst relative Kronecker error {worst:.3f}")
    logger.info(f"fine-tune it with fairseq-train ... {training_flags(args)} --finetune-from-model {out_path}")
    return student


def output_problem(teacher: str, out: str, force: bool) -> Optional[str]:
    """Why ``out`` cannot be written (the teacher itself, a folder, an existing file without ``force``, a missing
    folder), or ``None``."""
    folder = os.path.dirname(out) or "."
    if os.path.isdir(out):
        return f"STUDENT.pt {out} is a folder; pass a file name for the student checkpoint"
    if os.path.exists(out) and os.path.exists(teacher) and os.path.samefile(out, teacher):
        return f"STUDENT.pt {out} is the teacher checkpoint {teacher}: the student never replaces its teacher; " \
               "choose another STUDENT.pt"
    if os.path.exists(out) and not force:
        return f"STUDENT.pt {out} exists; pass --force to overwrite it, or choose another file"
    if not os.path.isdir(folder):
        return f"STUDENT.pt {out}: its folder {folder} does not exist; create it first"
    return None


@command("kronecker-init")
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pet-kronecker-init", description=__doc__.split("\n\n")[0])
    p.add_argument("teacher", metavar="TEACHER.pt")
    p.add_argument("out", metavar="STUDENT.pt")
    p.add_argument("--kronecker-ffn", default="", help="shape ROWS,COLS of A for the FFN weights ('' = dense)")
    p.add_argument("--kronecker-attention", default="", help="shape of A for the attention projections")
    p.add_argument("--kronecker-embeddings", default="", help="shape of A for the token embeddings")
    p.add_argument("--encoder-layer-plan", default="", help="student encoder plan (default: the teacher's depth, unshared)")
    p.add_argument("--decoder-layer-plan", default="", help="student decoder plan")
    p.add_argument("--encoder-source-layers", default="", help="teacher layer (1-based) for each unique encoder layer")
    p.add_argument("--decoder-source-layers", default="", help="teacher layer (1-based) for each unique decoder layer")
    p.add_argument("--data-bin", default="", help="data-bin with the dictionaries, if the teacher's is not at its saved path")
    p.add_argument("--force", action="store_true", help="overwrite an existing STUDENT.pt")
    opts = p.parse_args(argv)
    if not any((opts.kronecker_ffn, opts.kronecker_attention, opts.kronecker_embeddings)):
        p.error("nothing to factor: give --kronecker-ffn, --kronecker-attention and/or --kronecker-embeddings")
    problem = output_problem(opts.teacher, opts.out, opts.force)
    if problem:
        p.error(problem)
    try:
        initialise(opts.teacher, opts.out, opts)
    except (OSError, ValueError) as err:
        p.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
