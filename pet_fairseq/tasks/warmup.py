"""PET's warm-up task: simplified targets built from teacher predictions (Pea-KD's PTP labels).

For each non-pad target position t with gold token y_t, the teacher's distribution p^T gives

    correct_t   = [argmax_v p^T_t(v) = y_t]               (is the teacher right?)
    confident_t = [max_v p^T_t(v) > threshold]             (is the teacher sure?)
    label_t     = 2 * correct_t + confident_t  in {0: wrong & unsure, 1: wrong & sure,
                                                   2: right & unsure, 3: right & sure}

The student learns to predict these four classes from its own output distribution p^S; see
:mod:`pet_fairseq.criterions.pet_warmup`.
"""

from dataclasses import dataclass, field

import torch
from fairseq.tasks import register_task
from torch import Tensor

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.tasks.distillation import DistillationConfig, DistillationTask

NUM_SIMPLIFIED_CLASSES = 4


def simplified_targets(teacher_logits: Tensor, target: Tensor, confidence_threshold: float) -> Tensor:
    """The 4-way label ``2*correct + confident`` per target position (B x T, long)."""
    top_prob, top_token = teacher_logits.float().softmax(dim=-1).max(dim=-1)
    return simplified_labels(top_prob, top_token, target, confidence_threshold)


def simplified_labels(top_prob: Tensor, top_token: Tensor, target: Tensor, confidence_threshold: float) -> Tensor:
    """``2*correct + confident`` from the teacher's top-1 token and its probability (B x T each)."""
    correct = top_token.eq(target)
    confident = top_prob.gt(confidence_threshold)
    return 2 * correct.long() + confident.long()


@dataclass
class WarmupConfig(DistillationConfig):
    confidence_threshold: float = field(
        default=0.5,
        metadata={"help": "teacher top-1 probability above which a prediction counts as confident"},
    )


@register_task("pet_warmup", dataclass=WarmupConfig)
class WarmupTask(DistillationTask):
    """Distillation task whose criterion trains on teacher-derived simplified targets."""

    cfg: WarmupConfig

    def __init__(self, cfg: WarmupConfig, src_dict, tgt_dict) -> None:
        if not 0.0 < cfg.confidence_threshold < 1.0:
            raise ConfigError(f"--confidence-threshold must be in (0, 1), got {cfg.confidence_threshold}")
        super().__init__(cfg, src_dict, tgt_dict)

    def simplified_targets(self, model, sample: dict) -> Tensor:
        """Labels for ``sample['target']`` from the teacher (computed under ``no_grad``)."""
        with torch.no_grad():
            logits = self.teacher_outputs(model, sample).logits
            return simplified_targets(logits, sample["target"], self.cfg.confidence_threshold)
