"""PET's knowledge-distillation criterion: soft targets plus an intermediate-layer loss.

For target tokens t (pads excluded), student S and teacher T:

    L = (1 - α) · LS-CE(p^S, y)
        + α · τ² · Σ_t KL( softmax(z^T_t / τ) ‖ softmax(z^S_t / τ) )
        + β · (1/|M|) Σ_{(i,j) ∈ M} Σ_n ‖ LN(W_ij h^S_{j,n}) − LN(h^T_{i,n}) ‖² / d_T

where M is the layer map (teacher layer i → student depth j, encoder and decoder separately),
n runs over non-pad positions, LN is layer normalisation without affine parameters and
W_ij: d_S → d_T a learned projection. The projections live in this criterion, so fairseq
optimises them and saves them under ``criterion`` in checkpoints, never in the student model.

Defaults (α 0.5, τ 1, β 2 with the ``auto`` layer maps, no warm-up phase) are the recipe that won the
distillation study in the README (Multi30k, 300 student updates); the paper's α 0.1, τ 10, β 50 and
its warm-up lost there and remain options.

With ``--teacher-cache`` (offline word-level KD, :mod:`pet_fairseq.core.teacher_cache`) training
batches read the teacher's top-k tokens and log-probabilities instead of running the teacher. The
teacher's mass outside its top-k is dropped and the kept part renormalised: the KL term uses
q = softmax(log p^T_topk / τ) over the k cached tokens against the student's full-vocabulary
log-probabilities at those tokens (:func:`kd_topk_kl_loss`), which equals the online term when k
covers the vocabulary. The intermediate loss reads the teacher's hidden states from the cache too
when it was built with them (``pet-kdcache --encoder-states/--decoder-states``: the mapped teacher
layers, fp16); a cache without the mapped layers is refused unless ``--inter-beta 0``.

``--kd-validation`` chooses what validation computes: ``kd`` the training objective (the teacher
runs on every validation batch), ``ce`` the label-smoothed CE a run without KD reports (the teacher
does not run; ``loss`` then equals ``ce_loss``); ``auto`` is ``ce`` with ``--teacher-cache``, so a
cached run never runs its teacher, and ``kd`` otherwise. ``nll_loss`` is the same either way.

PET's warm-up as a phase of the same run: for the first ``⌊f · max_update⌋`` updates
(``--warmup-fraction f``) the loss is the warm-up loss of :mod:`pet_fairseq.criterions.pet_warmup`
on the teacher's simplified targets instead of L, so warm-up and KD share one budget, one
optimiser state and one learning-rate schedule.
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
    label_smoothed_nll_loss,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from omegaconf import II
from torch import Tensor, nn

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.criterions.pet_warmup import warmup_loss
from pet_fairseq.tasks.distillation import DistillationTask, ModelOutputs, forward_with_states, stack_shape
from pet_fairseq.tasks.warmup import simplified_labels, simplified_targets

logger = logging.getLogger(__name__)

LayerMap = List[Tuple[int, int]]


#: the layer-map value that picks :func:`default_layer_map` for the actual depths
AUTO_LAYER_MAP = "auto"


def default_layer_map(teacher_layers: int, student_layers: int) -> LayerMap:
    """Evenly spaced pairs for a teacher of ``teacher_layers`` and a student of ``student_layers`` depths.

    With n = min(teacher_layers, student_layers), pair k = 1..n maps teacher layer
    ⌊k·teacher_layers/n⌋ to student depth ⌊k·student_layers/n⌋: every layer of the shallower
    side is used once, the deeper side is sampled at even steps, and the last layers are always
    paired. 6 teacher layers and 4 student depths give ``1:1,3:2,4:3,6:4``; 3 and 4 give
    ``1:1,2:2,3:4``; equal depths give ``1:1,...,L:L``.
    """
    n = min(teacher_layers, student_layers)
    return [(k * teacher_layers // n, k * student_layers // n) for k in range(1, n + 1)]


def format_layer_map(pairs: LayerMap) -> str:
    """``[(1, 1), (3, 2)]`` -> ``"1:1,3:2"`` (the option's syntax)."""
    return ",".join(f"{t}:{s}" for t, s in pairs)


def parse_layer_map(text: str, teacher_layers: int, student_layers: int, option: str) -> LayerMap:
    """Parse ``"2:1,4:2,6:4"`` (teacher layer:student depth; 0 is the embedding output).

    ``"auto"`` is :func:`default_layer_map` of the two depths (logged); ``""`` is no pair at all.
    A pair out of range or given twice is a ValueError naming the option and the pair.
    """
    if text.strip().lower() == AUTO_LAYER_MAP:
        pairs = default_layer_map(teacher_layers, student_layers)
        logger.info(f"{option} {AUTO_LAYER_MAP}: {format_layer_map(pairs) or '(none)'} for a {teacher_layers}-layer "
                    f"teacher and a {student_layers}-deep student (evenly spaced; pass {option} to choose)")
        return pairs
    if not text.strip():
        return []
    pairs = []
    for token in text.split(","):
        parts = token.strip().split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"{option} {text!r}: {token.strip()!r} is not TEACHER:STUDENT, e.g. '2:1,4:2,6:4'")
        t, s = int(parts[0]), int(parts[1])
        if t > teacher_layers or s > student_layers:
            raise ConfigError(
                f"{option} {text!r}: pair {t}:{s} is out of range; the teacher has {teacher_layers} layers and "
                f"the student {student_layers} (0 = embeddings)"
            )
        if (t, s) in pairs:
            raise ConfigError(f"{option} {text!r}: pair {t}:{s} is given twice; list each TEACHER:STUDENT pair once")
        pairs.append((t, s))
    return pairs


def warmup_phase_updates(fraction: float, max_update: int) -> int:
    """Updates of the warm-up phase: ``⌊fraction · max_update⌋``; needs an update budget when fraction > 0."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"--warmup-fraction must be in [0, 1), got {fraction}")
    if fraction > 0 and not max_update:
        raise ConfigError("--warmup-fraction is a fraction of the update budget: pass --max-update N "
                         "(or --warmup-fraction 0 and a separate --task pet_warmup stage)")
    return int(fraction * max_update)


def kd_kl_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """Σ over positions where ``mask`` of KL(softmax(z^T/τ) ‖ softmax(z^S/τ)) (not yet scaled by τ²)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.masked_fill(~mask, 0.0).sum()


def kd_topk_kl_loss(student_logits: Tensor, teacher_tokens: Tensor, teacher_logprobs: Tensor, mask: Tensor,
                    temperature: float) -> Tensor:
    """Σ over positions where ``mask`` of KL(q ‖ softmax(z^S/τ)) with q the teacher's renormalised top-k.

    ``teacher_tokens``/``teacher_logprobs`` (B x T x k) are the teacher's k most probable tokens and
    their log-probabilities at τ = 1; q = softmax(log p^T / τ) over those k (the mass outside them is
    dropped). The student's log-probabilities are over the whole vocabulary, gathered at the k tokens.
    """
    student_lprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return kd_topk_kl_from_lprobs(student_lprobs, teacher_tokens, teacher_logprobs, mask, temperature)


def kd_topk_kl_from_lprobs(student_lprobs: Tensor, teacher_tokens: Tensor, teacher_logprobs: Tensor, mask: Tensor,
                           temperature: float) -> Tensor:
    """:func:`kd_topk_kl_loss` from the student's log-probabilities at τ (B x T x V), already normalised.

    At τ = 1 these are the log-probabilities the cross-entropy term uses, so one log-softmax over the
    vocabulary serves both terms.
    """
    log_p_student = student_lprobs.gather(-1, teacher_tokens)
    log_q = F.log_softmax(teacher_logprobs.float() / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p_student)).sum(dim=-1)
    return kl.masked_fill(~mask, 0.0).sum()


def hidden_state_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Σ over positions where ``mask`` (T x B) of the mean squared error of layer-normalised states."""
    s = F.layer_norm(student.float(), student.shape[-1:])
    t = F.layer_norm(teacher.float(), teacher.shape[-1:])
    return (s - t).pow(2).mean(dim=-1).masked_fill(~mask, 0.0).sum()


@dataclass
class PETKDConfig(LabelSmoothedCrossEntropyCriterionConfig):
    label_smoothing: float = field(default=0.1, metadata={"help": "epsilon of the label-smoothed CE term"})
    kd_alpha: float = field(
        default=0.5, metadata={"help": "α: weight of the soft-target KL term; the CE gets 1-α (paper: 0.1)"})
    kd_temperature: float = field(
        default=1.0, metadata={"help": "τ: softmax temperature of the KL term, scaled by τ² (paper: 10)"})
    inter_beta: float = field(
        default=2.0, metadata={"help": "β: weight of the intermediate-layer loss; 0 = off (paper: 50-100)"})
    encoder_layer_map: str = field(
        default=AUTO_LAYER_MAP,
        metadata={"help": "teacher encoder layer:student encoder depth pairs for the intermediate loss, e.g. "
                          "'2:1,4:2,6:4' (0 = embeddings); 'auto' = evenly spaced for the actual depths "
                          "(logged); '' = none"},
    )
    decoder_layer_map: str = field(
        default=AUTO_LAYER_MAP, metadata={"help": "like --encoder-layer-map, for the decoder"}
    )
    warmup_fraction: float = field(
        default=0.0,
        metadata={"help": "fraction of --max-update spent on PET's warm-up (simplified targets) before the KD "
                          "loss takes over, in the same run; 0 = KD from the first update"},
    )
    confidence_threshold: float = field(
        default=0.5, metadata={"help": "warm-up phase: teacher top-1 probability above which it counts as sure"}
    )
    warmup_label_smoothing: float = field(
        default=0.0, metadata={"help": "warm-up phase: label smoothing over the four simplified classes"}
    )
    token_loss_weight: float = field(
        default=0.0, metadata={"help": "warm-up phase: weight of the ordinary token cross-entropy"}
    )
    kd_validation: ChoiceEnum(["auto", "kd", "ce"]) = field(
        default="auto",
        metadata={"help": "what validation computes: kd = the training objective (runs the teacher on every "
                          "validation batch); ce = the label-smoothed CE of a run without KD (the teacher does not "
                          "run); auto = ce with --teacher-cache, kd otherwise"},
    )
    max_update: int = II("optimization.max_update")


@register_criterion("pet_kd", dataclass=PETKDConfig)
class PETKDCriterion(LabelSmoothedCrossEntropyCriterion):
    """(1-α)·label-smoothed CE + α·τ²·KL(teacher‖student) + β·intermediate loss."""

    def __init__(self, task, sentence_avg, label_smoothing, kd_alpha, kd_temperature, inter_beta,
                 encoder_layer_map, decoder_layer_map, warmup_fraction=0.0, confidence_threshold=0.5,
                 warmup_label_smoothing=0.0, token_loss_weight=0.0, kd_validation="auto", max_update=0,
                 ignore_prefix_size=0, report_accuracy=False):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.warmup_updates = warmup_phase_updates(warmup_fraction, max_update)
        if not 0.0 < confidence_threshold < 1.0:
            raise ConfigError(f"--confidence-threshold must be in (0, 1), got {confidence_threshold}")
        self.confidence_threshold, self.warmup_smoothing = confidence_threshold, warmup_label_smoothing
        self.token_loss_weight, self.update_num = token_loss_weight, 0
        if self.warmup_updates:
            logger.info(f"pet_kd: warm-up on simplified targets for updates 1-{self.warmup_updates} of {max_update}, then KD")
        if not isinstance(task, DistillationTask) or task.teacher is None:
            raise ConfigError("--criterion pet_kd needs --task pet_distillation with --teacher-path")
        if not 0.0 <= kd_alpha <= 1.0 or kd_temperature <= 0 or inter_beta < 0:
            raise ConfigError(f"need 0 <= --kd-alpha <= 1, --kd-temperature > 0, --inter-beta >= 0 "
                             f"(got {kd_alpha}, {kd_temperature}, {inter_beta})")
        self.alpha, self.temperature, self.beta = kd_alpha, kd_temperature, inter_beta
        self.validate_with_teacher = kd_validation == "kd" or (kd_validation == "auto" and not task.cfg.teacher_cache)
        if not self.validate_with_teacher:
            logger.info(f"pet_kd: validation reports the label-smoothed CE without running the teacher "
                        f"(--kd-validation {kd_validation}; kd = the training objective)")
        teacher, student = stack_shape(task.teacher), task.student_shape
        if inter_beta == 0:  # no intermediate loss: no pairs, so no projections to train or save
            if any(m.strip() not in ("", AUTO_LAYER_MAP) for m in (encoder_layer_map, decoder_layer_map)):
                logger.warning("--inter-beta 0: the layer maps given are not used (no intermediate loss)")
            encoder_layer_map = decoder_layer_map = ""
        self.encoder_map = parse_layer_map(encoder_layer_map, teacher.encoder_layers, student.encoder_layers,
                                           "--encoder-layer-map")
        self.decoder_map = parse_layer_map(decoder_layer_map, teacher.decoder_layers, student.decoder_layers,
                                           "--decoder-layer-map")
        # the teacher layers the maps read: from the cache, when training reads one
        self.teacher_layers = (sorted({t for t, _ in self.encoder_map}), sorted({t for t, _ in self.decoder_map}))
        if task.cfg.teacher_cache and (self.encoder_map or self.decoder_map):
            task.cache.require_states(*self.teacher_layers)
        # training-only projections d_student -> d_teacher, one per mapped pair
        self.encoder_projections = nn.ModuleList(
            nn.Linear(student.encoder_dim, teacher.encoder_dim, bias=False) for _ in self.encoder_map)
        self.decoder_projections = nn.ModuleList(
            nn.Linear(student.decoder_dim, teacher.decoder_dim, bias=False) for _ in self.decoder_map)

    def set_update_num(self, update_num: int) -> None:
        """Called by the task before each training step: selects the warm-up or the KD phase."""
        self.update_num = update_num

    @property
    def in_warmup(self) -> bool:
        return self.training and self.update_num < self.warmup_updates

    def forward(self, model, sample, reduce=True):
        if self.in_warmup:
            return self.warmup_forward(model, sample, reduce)
        if not self.training and not self.validate_with_teacher:
            loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
            return loss, sample_size, dict(logging_output, ce_loss=loss.data)
        student = forward_with_states(model, sample["net_input"])
        target_mask = model.get_targets(sample, student.net_output).ne(self.padding_idx)
        cached = self.task.cached_teacher(sample) if self.training else None
        if cached is not None:
            ce_loss, nll_loss, kd_loss = self.cached_terms(model, student, sample, cached, target_mask, reduce)
            inter_loss = target_mask.new_zeros((), dtype=torch.float)
            if self.encoder_map or self.decoder_map:
                teacher = self.task.cached_teacher_states(sample, *self.teacher_layers)
                inter_loss = self.intermediate_loss(student, teacher, target_mask)
        else:
            ce_loss, nll_loss = self.compute_loss(model, student.net_output, sample, reduce=reduce)
            teacher = self.task.teacher_outputs(model, sample)
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

    def cached_terms(self, model, student: ModelOutputs, sample, cached: Tuple[Tensor, Tensor], target_mask: Tensor,
                     reduce: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """CE, NLL and the top-k KL term from the teacher cache.

        At τ = 1 (and no ignored prefix) the KL term reads the CE term's log-probabilities, so the
        log-softmax over the vocabulary runs once; otherwise it computes its own at τ.
        """
        if self.temperature != 1 or self.ignore_prefix_size != 0:
            ce_loss, nll_loss = self.compute_loss(model, student.net_output, sample, reduce=reduce)
            return ce_loss, nll_loss, kd_topk_kl_loss(student.logits, *cached, target_mask, self.temperature)
        lprobs, target = self.get_lprobs_and_target(model, student.net_output, sample)
        ce_loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps, ignore_index=self.padding_idx, reduce=reduce)
        return ce_loss, nll_loss, kd_topk_kl_from_lprobs(lprobs.view(*target_mask.shape, -1), *cached, target_mask, 1.0)

    def warmup_forward(self, model, sample, reduce=True):
        """The warm-up phase: cross-entropy on the teacher's simplified targets (+ λ · token CE)."""
        net_output = model(**sample["net_input"])
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        cached = self.task.cached_teacher(sample)
        with torch.no_grad():
            if cached is not None:
                tokens, logprobs = cached
                labels = simplified_labels(logprobs[..., 0].exp(), tokens[..., 0], sample["target"],
                                           self.confidence_threshold).reshape(-1)
            else:
                teacher_logits = self.task.teacher_outputs(model, sample).logits
                labels = simplified_targets(teacher_logits, sample["target"], self.confidence_threshold).reshape(-1)
        mask = target.ne(self.padding_idx)
        simplified = warmup_loss(lprobs, target, labels, mask, self.warmup_smoothing)
        ce_loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        loss = simplified + self.token_loss_weight * ce_loss
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        return loss, sample_size, {
            "loss": loss.data, "nll_loss": nll_loss.data, "ce_loss": ce_loss.data, "warmup_loss": simplified.data,
            "ntokens": sample["ntokens"], "nsentences": sample["target"].size(0), "sample_size": sample_size,
        }

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
        ours = self.state_dict()
        for key, value in state_dict.items():
            if key in ours and tuple(value.shape) != tuple(ours[key].shape):
                raise ConfigError(
                    f"the checkpoint being resumed holds KD projections for a teacher of width {value.shape[0]} "
                    f"({key}: {tuple(value.shape)}), but this run's teacher has width {ours[key].shape[0]}: "
                    "the teacher of --teacher-path is not the one this student was distilled from. Resume with "
                    "that teacher, or start a new --save-dir")
        if set(state_dict) != set(ours):
            raise ConfigError(
                f"the checkpoint being resumed holds KD projections for {len(state_dict)} layer pairs, this run "
                f"maps {len(ours)}: resume with the same --inter-beta and layer maps (or a new --save-dir)")
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in ("ce_loss", "kd_loss", "inter_loss", "warmup_loss"):
            if any(key in log for log in logging_outputs):
                total = sum(log.get(key, 0) for log in logging_outputs)
                metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)
