"""A translation task that owns a frozen teacher (``--task pet_distillation --teacher-path CKPT``).

The teacher is loaded once with fairseq's checkpoint utilities when the student is built,
frozen (``requires_grad=False``, eval mode), kept outside the student and the criterion (so it
is never optimised and never written into student checkpoints), and moved lazily to the
student's device and dtype. Criteria get teacher outputs through :meth:`teacher_outputs`.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional

import torch
from fairseq import checkpoint_utils, models
from fairseq.data import Dictionary
from fairseq.models import FairseqEncoderDecoderModel
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class ModelOutputs(NamedTuple):
    """What distillation needs from one forward pass of a teacher or a student."""

    net_output: tuple  # fairseq's decoder output: (logits B x T x V, extra)
    encoder_states: List[Tensor]  # [embeddings, layer 1, ..., layer L], each T_src x B x C
    decoder_states: List[Tensor]  # [embeddings, layer 1, ..., layer L], each T_tgt x B x C
    encoder_padding_mask: Optional[Tensor]  # B x T_src, True at pads

    @property
    def logits(self) -> Tensor:
        return self.net_output[0]


def forward_with_states(model: nn.Module, net_input: dict) -> ModelOutputs:
    """Run an encoder-decoder model keeping every layer's hidden states (``return_all_hiddens``)."""
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"], return_all_hiddens=True)
    net_output = model.decoder(
        net_input["prev_output_tokens"], encoder_out=encoder_out, src_lengths=net_input["src_lengths"], return_all_hiddens=True
    )
    mask = encoder_out["encoder_padding_mask"]
    return ModelOutputs(
        net_output, encoder_out["encoder_states"], net_output[1]["inner_states"], mask[0] if len(mask) else None
    )


class StackShape(NamedTuple):
    """Depth and width of a model's encoder and decoder (for layer maps and KD projections)."""

    encoder_layers: int
    encoder_dim: int
    decoder_layers: int
    decoder_dim: int


def stack_shape(model: nn.Module) -> StackShape:
    return StackShape(
        model.encoder.num_layers, model.encoder.embed_tokens.embedding_dim, model.decoder.num_layers, model.decoder.embed_dim
    )


@dataclass
class DistillationConfig(TranslationConfig):
    teacher_path: str = field(
        default="",
        metadata={"help": "checkpoint of the trained teacher (a fairseq translation model on the same dictionaries)"},
    )


@register_task("pet_distillation", dataclass=DistillationConfig)
class DistillationTask(TranslationTask):
    """Translation with a frozen teacher whose outputs criteria can ask for."""

    cfg: DistillationConfig

    def __init__(self, cfg: DistillationConfig, src_dict: Dictionary, tgt_dict: Dictionary) -> None:
        super().__init__(cfg, src_dict, tgt_dict)
        self.teacher: Optional[nn.Module] = None
        self.student_shape: Optional[StackShape] = None

    def build_model(self, cfg, from_checkpoint: bool = False):
        """Build the student; load the teacher unless the student is only being loaded to decode."""
        model = super().build_model(cfg, from_checkpoint)
        self.student_shape = stack_shape(model)
        if not from_checkpoint:
            self.teacher = self.load_teacher(self.cfg.teacher_path)
        return model

    def can_reuse_epoch_itr(self, dataset) -> bool:
        """Build each epoch's batches afresh, so that resuming reproduces a straight run exactly.

        fairseq orders examples with ``numpy_seed(seed + epoch)`` of the epoch in which the batch
        iterator is *created* and then reuses that iterator: a straight run keeps epoch 1's
        batches while a run resumed at epoch 2 builds epoch-2 batches, so equal-length sentences
        land in different batches and the two runs drift apart.
        """
        return False

    def load_teacher(self, path: str) -> nn.Module:
        """Load, check and freeze the teacher checkpoint at ``path``."""
        if not path:
            raise ValueError(f"--task {self.cfg._name} needs --teacher-path CKPT (a trained teacher checkpoint)")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"teacher checkpoint {path!r} does not exist: pass the teacher's .pt file with --teacher-path")
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(path)
            teacher_cfg = state["cfg"]
        except Exception as err:  # torch/pickle raise many types for a non-checkpoint file
            raise ValueError(f"teacher checkpoint {path!r} is not a readable fairseq checkpoint: {err}") from err
        self._check_teacher_task(path, teacher_cfg.task)
        teacher = models.build_model(teacher_cfg.model, self, from_checkpoint=True)
        if not isinstance(teacher, FairseqEncoderDecoderModel):
            raise ValueError(f"teacher {path!r} is a {type(teacher).__name__}, not an encoder-decoder translation model")
        try:
            teacher.load_state_dict(state["model"], strict=True, model_cfg=teacher_cfg.model)
        except RuntimeError as err:
            raise ValueError(
                f"teacher {path!r} does not fit this task's dictionaries ({len(self.src_dict)}/{len(self.tgt_dict)} "
                f"source/target types): {str(err).splitlines()[-1].strip()}. Use the teacher's dictionaries "
                "(fairseq-preprocess --srcdict/--tgtdict)"
            ) from err
        teacher.eval()
        teacher.requires_grad_(False)
        logger.info(
            f"teacher {path}: {teacher_cfg.model._name if hasattr(teacher_cfg.model, '_name') else teacher_cfg.model.arch}, "
            f"{sum(p.numel() for p in teacher.parameters()):,} parameters, frozen"
        )
        return teacher

    def _check_teacher_task(self, path: str, teacher_task) -> None:
        pair = (teacher_task.get("source_lang"), teacher_task.get("target_lang"))
        ours = (self.cfg.source_lang, self.cfg.target_lang)
        if all(pair) and pair != ours:
            raise ValueError(f"teacher {path!r} translates {pair[0]}->{pair[1]} but this task is {ours[0]}->{ours[1]}")
        teacher_data = (teacher_task.get("data") or "").split(os.pathsep)[0]
        for side, lang, ours_dict in (("source", ours[0], self.src_dict), ("target", ours[1], self.tgt_dict)):
            dict_path = os.path.join(teacher_data, f"dict.{lang}.txt")
            if not os.path.isfile(dict_path):
                logger.warning(f"cannot compare the teacher's {side} dictionary: {dict_path} not found")
                continue
            check_same_dictionary(side, Dictionary.load(dict_path), ours_dict, dict_path)

    def teacher_outputs(self, model: nn.Module, sample: dict) -> ModelOutputs:
        """The teacher's logits and hidden states for ``sample``, without gradients."""
        if self.teacher is None:
            raise RuntimeError("no teacher loaded: build the student with this task's build_model first")
        param = next(model.parameters())
        if next(self.teacher.parameters()).device != param.device or next(self.teacher.parameters()).dtype != param.dtype:
            self.teacher.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            return forward_with_states(self.teacher, sample["net_input"])


def check_same_dictionary(side: str, teacher: Dictionary, student: Dictionary, teacher_path: str = "") -> None:
    """Raise a ValueError naming the first difference if two dictionaries are not identical."""
    if teacher.symbols == student.symbols:
        return
    first = next((i for i, (a, b) in enumerate(zip(teacher.symbols, student.symbols)) if a != b), min(len(teacher), len(student)))
    show = lambda d: repr(d.symbols[first]) if first < len(d) else "<end>"  # noqa: E731
    raise ValueError(
        f"the teacher's {side} dictionary ({teacher_path or 'teacher'}, {len(teacher)} types) differs from the "
        f"student's ({len(student)} types) at index {first}: {show(teacher)} vs {show(student)}. Binarize the "
        f"student's data with the teacher's dictionaries (fairseq-preprocess --srcdict/--tgtdict), or train "
        f"the teacher on this data-bin"
    )
