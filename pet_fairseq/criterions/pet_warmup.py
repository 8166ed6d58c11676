"""PET's warm-up criterion: the student predicts the teacher-derived simplified targets.

With the student's distribution p^S at position t and gold token y_t:

    c_t = p^S_t(y_t)             (student's probability that it is right)
    f_t = max_v p^S_t(v)         (student's confidence)
    q_t = [(1-c)(1-f), (1-c)f, c(1-f), cf]    over the classes of
          :func:`pet_fairseq.tasks.warmup.simplified_targets` (wrong/right × unsure/sure)

    L = Σ_t [ -(1-ε) log q_t(label_t) - (ε/4) Σ_k log q_t(k) ]  +  λ · LS-CE(p^S, y)

summed over non-pad positions; ε is ``--warmup-label-smoothing`` and λ
``--token-loss-weight``. The student's forward pass runs inside autograd (the reference
implementation of PET accidentally ran it under ``no_grad``, so nothing was learned).
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics
from torch import Tensor

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.tasks.warmup import NUM_SIMPLIFIED_CLASSES, WarmupTask

_EPS = 1e-6


def simplified_class_log_probs(lprobs: Tensor, target: Tensor) -> Tensor:
    """log q over the four simplified classes from the student's log-probabilities (... x V)."""
    log_c = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    log_f = lprobs.max(dim=-1).values
    log_not_c = torch.log1p(-log_c.exp().clamp(max=1 - _EPS))
    log_not_f = torch.log1p(-log_f.exp().clamp(max=1 - _EPS))
    return torch.stack([log_not_c + log_not_f, log_not_c + log_f, log_c + log_not_f, log_c + log_f], dim=-1)


def warmup_loss(lprobs: Tensor, target: Tensor, labels: Tensor, mask: Tensor, smoothing: float = 0.0) -> Tensor:
    """Σ over positions where ``mask`` of the (label-smoothed) CE between labels and q."""
    log_q = simplified_class_log_probs(lprobs.float(), target)
    nll = -log_q.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    smooth = -log_q.mean(dim=-1)
    return ((1 - smoothing) * nll + smoothing * smooth).masked_fill(~mask, 0.0).sum()


@dataclass
class PETWarmupConfig(LabelSmoothedCrossEntropyCriterionConfig):
    warmup_label_smoothing: float = field(
        default=0.0, metadata={"help": "ε: label smoothing over the four simplified classes"}
    )
    token_loss_weight: float = field(
        default=0.0, metadata={"help": "λ: weight of the ordinary (label-smoothed) token cross-entropy"}
    )


@register_criterion("pet_warmup", dataclass=PETWarmupConfig)
class PETWarmupCriterion(LabelSmoothedCrossEntropyCriterion):
    """Cross-entropy on PET's simplified targets (+ optional token CE)."""

    def __init__(self, task, sentence_avg, label_smoothing, warmup_label_smoothing, token_loss_weight,
                 ignore_prefix_size=0, report_accuracy=False):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if not isinstance(task, WarmupTask):
            raise ConfigError("--criterion pet_warmup needs --task pet_warmup (with --teacher-path)")
        self.warmup_smoothing = warmup_label_smoothing
        self.token_loss_weight = token_loss_weight

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        labels = self.task.simplified_targets(model, sample).reshape(-1)  # lprobs/target are flattened
        mask = target.ne(self.padding_idx)
        simplified = warmup_loss(lprobs, target, labels, mask, self.warmup_smoothing)
        ce_loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        loss = simplified + self.token_loss_weight * ce_loss
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        counts = torch.bincount(labels[mask], minlength=NUM_SIMPLIFIED_CLASSES)
        logging_output = {
            "loss": loss.data, "nll_loss": nll_loss.data, "warmup_loss": simplified.data,
            "teacher_right": counts[2:].sum().data, "teacher_sure": (counts[1] + counts[3]).data,
            "ntokens": sample["ntokens"], "nsentences": sample["target"].size(0), "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        metrics.log_scalar("warmup_loss", sum(log.get("warmup_loss", 0) for log in logging_outputs) / sample_size / math.log(2),
                           sample_size, round=3)
        for key in ("teacher_right", "teacher_sure"):  # % of target tokens
            metrics.log_scalar(key, 100.0 * sum(log.get(key, 0) for log in logging_outputs) / max(ntokens, 1), ntokens, round=1)
