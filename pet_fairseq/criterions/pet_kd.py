"""PET's knowledge-distillation criterion: soft targets plus an intermediate-layer loss.

For target tokens t (pads excluded), student S and teacher T:

    L = (1 - α) · LS-CE(p^S, y)
        + α · τ² · Σ_t KL( softmax(z^T_t / τ) ‖ softmax(z^S_t / τ) )
        + β · (1/|M|) Σ_{(i,j) ∈ M} Σ_n ‖ LN(W_ij h^S_{j,n}) − LN(h^T_{i,n}) ‖² / d_T

where M is the layer map (teacher layer i → student depth j, encoder and decoder separately),
n runs over non-pad positions, LN is layer normalisation without affine parameters and
W_ij: d_S → d_T a learned projection. The projections live in this criterion, so fairseq
optimises them and saves them under ``criterion`` in checkpoints, never in the student model.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import List, Tuple

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics
from torch import Tensor, nn

from pet_fairseq.tasks.distillation import DistillationTask, ModelOutputs, forward_with_states, stack_shape

logger = logging.getLogger(__name__)

LayerMap = List[Tuple[int, int]]


def parse_layer_map(text: str, teacher_layers: int, student_layers: int, option: str) -> LayerMap:
    """Parse ``"2:1,4:2,6:4"`` (teacher layer:student depth; 0 is the embedding output)."""
    if not text.strip():
        return []
    pairs = []
    for token in text.split(","):
        parts = token.strip().split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"{option} {text!r}: {token.strip()!r} is not TEACHER:STUDENT, e.g. '2:1,4:2,6:4'")
        t, s = int(parts[0]), int(parts[1])
        if t > teacher_layers or s > student_layers:
            raise ValueError(
                f"{option} {text!r}: pair {t}:{s} is out of range; the teacher has {teacher_layers} layers and "
                f"the student {student_layers} (0 = embeddings)"
            )
        pairs.append((t, s))
    return pairs


def kd_kl_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """Σ over positions where ``mask`` of KL(softmax(z^T/τ) ‖ softmax(z^S/τ)) (not yet scaled by τ²)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.masked_fill(~mask, 0.0).sum()


def hidden_state_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Σ over positions where ``mask`` (T x B) of the mean squared error of layer-normalised states."""
    s = F.layer_norm(student.float(), student.shape[-1:])
    t = F.layer_norm(teacher.float(), teacher.shape[-1:])
    return (s - t).pow(2).mean(dim=-1).masked_fill(~mask, 0.0).sum()


@dataclass
class PETKDConfig(LabelSmoothedCrossEntropyCriterionConfig):
    label_smoothing: float = field(default=0.1, metadata={"help": "epsilon of the label-smoothed CE term"})
    kd_alpha: float = field(default=0.1, metadata={"help": "α: weight of the soft-target KL term; the CE gets 1-α"})
    kd_temperature: float = field(default=10.0, metadata={"help": "τ: softmax temperature of the KL term (scaled by τ²)"})
    inter_beta: float = field(default=50.0, metadata={"help": "β: weight of the intermediate-layer loss (paper: 50-100)"})
    encoder_layer_map: str = field(
        default="2:1,4:2,6:4",
        metadata={"help": "teacher encoder layer:student encoder depth pairs for the intermediate loss ('' = none)"},
    )
    decoder_layer_map: str = field(
        default="2:1,4:2,6:4", metadata={"help": "like --encoder-layer-map, for the decoder"}
    )


@register_criterion("pet_kd", dataclass=PETKDConfig)
class PETKDCriterion(LabelSmoothedCrossEntropyCriterion):
    """(1-α)·label-smoothed CE + α·τ²·KL(teacher‖student) + β·intermediate loss."""

    def __init__(self, task, sentence_avg, label_smoothing, kd_alpha, kd_temperature, inter_beta,
                 encoder_layer_map, decoder_layer_map, ignore_prefix_size=0, report_accuracy=False):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if not isinstance(task, DistillationTask) or task.teacher is None:
            raise ValueError("--criterion pet_kd needs --task pet_distillation with --teacher-path")
        if not 0.0 <= kd_alpha <= 1.0 or kd_temperature <= 0 or inter_beta < 0:
            raise ValueError(f"need 0 <= --kd-alpha <= 1, --kd-temperature > 0, --inter-beta >= 0 "
                             f"(got {kd_alpha}, {kd_temperature}, {inter_beta})")
        self.alpha, self.temperature, self.beta = kd_alpha, kd_temperature, inter_beta
        teacher, student = stack_shape(task.teacher), task.student_shape
        self.encoder_map = parse_layer_map(encoder_layer_map, teacher.encoder_layers, student.encoder_layers, "--encoder-layer-map")
        self.decoder_map = parse_layer_map(decoder_layer_map, teacher.decoder_layers, student.decoder_layers, "--decoder-layer-map")
        # training-only projections d_student -> d_teacher, one per mapped pair
        self.encoder_projections = nn.ModuleList(
            nn.Linear(student.encoder_dim, teacher.encoder_dim, bias=False) for _ in self.encoder_map)
        self.decoder_projections = nn.ModuleList(
            nn.Linear(student.decoder_dim, teacher.decoder_dim, bias=False) for _ in self.decoder_map)

    def forward(self, model, sample, reduce=True):
        student = forward_with_states(model, sample["net_input"])
        teacher = self.task.teacher_outputs(model, sample)
        ce_loss, nll_loss = self.compute_loss(model, student.net_output, sample, reduce=reduce)
        target_mask = model.get_targets(sample, student.net_output).ne(self.padding_idx)
        kd_loss = kd_kl_loss(student.logits, teacher.logits, target_mask, self.temperature)
        inter_loss = self.intermediate_loss(student, teacher, target_mask)
        loss = (1 - self.alpha) * ce_loss + self.alpha * self.temperature**2 * kd_loss + self.beta * inter_loss
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data, "nll_loss": nll_loss.data, "ce_loss": ce_loss.data, "kd_loss": kd_loss.data,
            "inter_loss": inter_loss.data, "ntokens": sample["ntokens"], "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, student.net_output, sample)
            logging_output.update(n_correct=n_correct.data, total=total.data)
        return loss, sample_size, logging_output

    def intermediate_loss(self, student: ModelOutputs, teacher: ModelOutputs, target_mask: Tensor) -> Tensor:
        """Mean over mapped pairs of the position-summed hidden-state MSE (encoder and decoder)."""
        src_mask = (
            ~student.encoder_padding_mask.t() if student.encoder_padding_mask is not None
            else torch.ones(student.encoder_states[0].shape[:2], dtype=torch.bool, device=target_mask.device)
        )
        terms = [
            hidden_state_loss(proj(student.encoder_states[s]), teacher.encoder_states[t], src_mask)
            for (t, s), proj in zip(self.encoder_map, self.encoder_projections)
        ] + [
            hidden_state_loss(proj(student.decoder_states[s]), teacher.decoder_states[t], target_mask.t())
            for (t, s), proj in zip(self.decoder_map, self.decoder_projections)
        ]
        return torch.stack(terms).mean() if terms else target_mask.new_zeros((), dtype=torch.float)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Keep fresh projections when the checkpoint's criterion had none (warm-up, plain CE).

        fairseq passes ``None`` for such checkpoints, e.g. with ``--finetune-from-model`` from
        the warm-up stage; a KD checkpoint's projections are restored as usual.
        """
        if state_dict is None:
            logger.info("pet_kd: checkpoint has no KD projections; starting them fresh")
            return None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in ("ce_loss", "kd_loss", "inter_loss"):
            total = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)
