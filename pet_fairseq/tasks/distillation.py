"""A translation task that owns a frozen teacher (``--task pet_distillation --teacher-path CKPT``).

The teacher is loaded once with fairseq's checkpoint utilities when the student is built,
frozen (``requires_grad=False``, eval mode), kept outside the student and the criterion (so it
is never optimised and never written into student checkpoints), and moved lazily to the
student's device and dtype (or the dtype chosen with ``--teacher-dtype``). Criteria get teacher
outputs through :meth:`teacher_outputs` and compute their losses in fp32. Under distributed
training every process holds its own teacher on its own device; it is never wrapped in
``DistributedDataParallel`` and never synchronised (it does not change).

The teacher's identity (its path and the SHA-256 of its file) is kept in the task's state, which fairseq-train saves in
every checkpoint (``task_state``). A student resumed from a checkpoint that records another teacher is refused (one
student distilled from two teachers), unless ``--allow-teacher-change``; a checkpoint without the record (older ones)
resumes as before.
"""

import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import torch
from fairseq import models
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.models import FairseqEncoderDecoderModel
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf, open_dict
from torch import Tensor, nn

from pet_fairseq.core.checkpoint import read_teacher_checkpoint
from pet_fairseq.core.errors import ConfigError, MissingFileError
from pet_fairseq.core.files import file_digest_once
from pet_fairseq.core.teacher_cache import TeacherCache

logger = logging.getLogger(__name__)

#: --teacher-dtype values other than 'auto' (= the student's dtype)
TEACHER_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEACHER_DTYPE_CHOICES = ChoiceEnum(["auto", *TEACHER_DTYPES])


def resolve_teacher_dtype(choice: str, student_dtype: torch.dtype) -> torch.dtype:
    """The teacher's dtype for ``--teacher-dtype choice``: 'auto' follows the student, else fp32/fp16/bf16."""
    choice = str(choice)
    if choice == "auto":
        return student_dtype
    if choice not in TEACHER_DTYPES:
        raise ConfigError(f"--teacher-dtype {choice!r}: choose one of auto, {', '.join(TEACHER_DTYPES)}")
    return TEACHER_DTYPES[choice]


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
    """Run an encoder-decoder model keeping every layer's hidden states (``return_all_hiddens``).

    The pass goes through ``model(...)`` itself, so that a ``DistributedDataParallel`` wrapper
    sees it and all-reduces the gradients (calling ``model.encoder``/``model.decoder`` directly
    would skip the wrapper's forward and leave every rank with its own gradients); a forward hook
    on the encoder keeps its output, which the model's forward does not return.
    """
    captured: List[dict] = []
    handle = model.encoder.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        net_output = model(**net_input, return_all_hiddens=True)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(model).__name__}.forward did not run its encoder; cannot collect encoder states")
    encoder_out = captured[-1]
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
    teacher_dtype: TEACHER_DTYPE_CHOICES = field(
        default="auto",
        metadata={"help": "precision of the frozen teacher: 'auto' = the student's (fp16 with --fp16, bf16 with "
                          "--bf16, else fp32); fp16/bf16 keep a half-precision teacher (half the memory) while the "
                          "student trains in fp32; losses are computed in fp32 either way"},
    )
    teacher_cache: str = field(
        default="",
        metadata={"help": "folder of the teacher's cached top-k distributions on the training split (python -m "
                          "pet_fairseq.kdcache): training batches read it instead of running the teacher; it must "
                          "have been made from --teacher-path and this data-bin (checked). Validation still runs "
                          "the teacher"},
    )
    allow_teacher_change: bool = field(
        default=False,
        metadata={"help": "resume a student whose checkpoint records another teacher (--teacher-path is compared with "
                          "the teacher's SHA-256 saved in the checkpoint) and go on distilling it from this one; "
                          "without it such a resume is refused"},
    )


@register_task("pet_distillation", dataclass=DistillationConfig)
class DistillationTask(TranslationTask):
    """Translation with a frozen teacher whose outputs criteria can ask for."""

    cfg: DistillationConfig

    def __init__(self, cfg: DistillationConfig, src_dict: Dictionary, tgt_dict: Dictionary) -> None:
        super().__init__(cfg, src_dict, tgt_dict)
        self.teacher: Optional[nn.Module] = None
        self.student_shape: Optional[StackShape] = None
        self._cache: Optional[TeacherCache] = None

    @classmethod
    def setup_task(cls, cfg: DistillationConfig, **kwargs):
        """fairseq's translation setup (a missing language pair is inferred from the data), recorded for checkpoints."""
        task = super().setup_task(cfg, **kwargs)
        record_language_pair(task.cfg)
        return task

    def build_model(self, cfg, from_checkpoint: bool = False):
        """Build the student; load the teacher unless the student is only being loaded to decode."""
        model = super().build_model(cfg, from_checkpoint)
        self.student_shape = stack_shape(model)
        if not from_checkpoint:
            self.teacher = self.load_teacher(self.cfg.teacher_path)
            self.record_teacher()
            if self.cache is not None:
                self.cache.check(Path(self.cfg.teacher_path), Path(self.cfg.data.split(os.pathsep)[0]),
                                 self.cfg.source_lang, self.cfg.target_lang, len(self.tgt_dict))
                logger.info(f"teacher cache {self.cache.path}: top-{self.cache.k} of the teacher on the "
                            f"{self.cache.split} split; training batches read it instead of running the teacher")
        return model

    @property
    def cache(self) -> Optional[TeacherCache]:
        """The ``--teacher-cache`` folder, opened on first use (None without the option)."""
        if self._cache is None and self.cfg.teacher_cache:
            self._cache = TeacherCache.open(Path(self.cfg.teacher_cache))
        return self._cache

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """fairseq's translation split; the cached split must have exactly the cache's sentences."""
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.cache is not None and split == self.cache.split:
            self.cache.check_lengths(self.datasets[split].tgt_sizes)
            self.cache.check_source_lengths(self.datasets[split].src_sizes)

    def cached_teacher(self, sample: dict) -> Optional[Tuple[Tensor, Tensor]]:
        """The teacher's cached top-k ids and log-probabilities (B x T x k) of a training batch, or None.

        None without ``--teacher-cache``. Only batches of the cached split may be asked for: the
        criterion asks in training mode, and fairseq trains on one split.
        """
        if self.cache is None:
            return None
        return self.cache.lookup(sample["id"], sample["target"].ne(self.tgt_dict.pad()))

    def cached_teacher_states(self, sample: dict, encoder_layers: List[int], decoder_layers: List[int]) -> ModelOutputs:
        """The teacher's cached hidden states of a training batch after the given layers, indexed by layer and shaped
        as :func:`forward_with_states` gives them (T x B x C); no logits. Needs a cache built with those states."""
        encoder, decoder = self.cache.lookup_states(
            sample["id"], sample["net_input"]["src_tokens"].ne(self.src_dict.pad()),
            sample["target"].ne(self.tgt_dict.pad()), encoder_layers, decoder_layers)
        return ModelOutputs((None, None), encoder, decoder, None)

    def can_reuse_epoch_itr(self, dataset) -> bool:
        """Build each epoch's batches afresh, so that resuming reproduces a straight run exactly.

        fairseq orders examples with ``numpy_seed(seed + epoch)`` of the epoch in which the batch
        iterator is *created* and then reuses that iterator: a straight run keeps epoch 1's
        batches while a run resumed at epoch 2 builds epoch-2 batches, so equal-length sentences
        land in different batches and the two runs drift apart.
        """
        return False

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's batch iterator, after collecting the unreachable iterators of earlier epochs.

        Without reuse every epoch (and every validation) builds a new iterator. fairseq's
        ``BufferedIterator`` stops after its last batch without exhausting the DataLoader, so the
        old DataLoader iterator keeps its worker process until the iterator is freed; if it is
        only reachable through a reference cycle it waits for the garbage collector, and a
        DataLoader worker forked in the meantime inherits a copy, collects it and prints
        ``_MultiProcessingDataLoaderIter.__del__ ... AssertionError: can only test a child
        process``. Collecting here shuts such iterators down in this process, before any fork.
        """
        gc.collect()
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def load_teacher(self, path: str) -> nn.Module:
        """Load, check and freeze the teacher checkpoint at ``path``."""
        if not path:
            raise ConfigError(f"--task {self.cfg._name} needs --teacher-path CKPT (a trained teacher checkpoint)")
        if not os.path.isfile(path):
            raise MissingFileError(f"teacher checkpoint {path!r} does not exist: pass the teacher's .pt file with --teacher-path")
        state = read_teacher_checkpoint(path)
        teacher_cfg = state["cfg"]
        self._check_teacher_task(path, teacher_cfg.task)
        teacher = models.build_model(teacher_cfg.model, self, from_checkpoint=True)
        if not isinstance(teacher, FairseqEncoderDecoderModel):
            raise ConfigError(f"teacher {path!r} is a {type(teacher).__name__}, not an encoder-decoder translation model")
        try:
            teacher.load_state_dict(state["model"], strict=True, model_cfg=teacher_cfg.model)
        except RuntimeError as err:
            raise ConfigError(
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

    def record_teacher(self) -> None:
        """Keep the teacher's identity in the task state that checkpoints save, after refusing a resumed student that
        was distilled from another teacher (see the module docstring)."""
        path = self.cfg.teacher_path
        digest = file_digest_once(Path(path))
        resumed = self.resumed_checkpoint()
        recorded = read_task_state(resumed) if resumed is not None else {}
        before, before_path = recorded.get("teacher_sha256"), recorded.get("teacher_path", "?")
        if before and before != digest:
            where = f"{resumed} was distilled from teacher {before_path} (sha256 {before[:12]})"
            now = f"--teacher-path {path} (sha256 {digest[:12]})"
            if not self.cfg.allow_teacher_change:
                raise ConfigError(
                    f"{where}, not from {now}: resuming would distil one student from two teachers. Pass --teacher-path "
                    f"{before_path}, start a new student with another --save-dir, or pass --allow-teacher-change to "
                    "go on with this teacher")
            logger.warning(f"{where}; going on with {now} (--allow-teacher-change)")
        self.state.merge_state_dict({"teacher_path": path, "teacher_sha256": digest})

    def resumed_checkpoint(self) -> Optional[Path]:
        """The checkpoint fairseq-train will resume the student from (as ``checkpoint_utils.load_checkpoint`` picks it),
        or None: no checkpoint config (the task was set up on its own), a first launch, or ``--finetune-from-model``
        (a new student initialised from a model, not a resume)."""
        parent = self.cfg._get_parent() if OmegaConf.is_config(self.cfg) else None
        ckpt = parent.get("checkpoint") if OmegaConf.is_config(parent) and "checkpoint" in parent else None
        if not OmegaConf.is_config(ckpt) or not ckpt.get("save_dir"):
            return None
        restore = ckpt.get("restore_file") or "checkpoint_last.pt"
        if restore == "checkpoint_last.pt":
            last = Path(ckpt.save_dir) / "checkpoint_last.pt"
            path = last if last.is_file() else (Path(ckpt.continue_once) if ckpt.get("continue_once") else None)
        else:
            path = Path(restore)
        return path if path is not None and path.is_file() else None

    def _check_teacher_task(self, path: str, teacher_task) -> None:
        """Refuse a teacher of another translation direction; compare both dictionaries with ours."""
        ours = (self.cfg.source_lang, self.cfg.target_lang)
        teacher_data = (teacher_task.get("data") or "").split(os.pathsep)[0]
        pair, origin = teacher_direction(teacher_task)
        if pair is None:
            logger.warning(f"cannot check the translation direction of teacher {path}: {origin}")
        elif pair != ours:
            raise ConfigError(
                f"teacher {path!r} translates {pair[0]}->{pair[1]} ({origin}) but this task is {ours[0]}->{ours[1]}: "
                f"it would teach the student the opposite direction. Distil with --source-lang {pair[0]} "
                f"--target-lang {pair[1]}, or pass a teacher trained for {ours[0]}->{ours[1]}"
            )
        for side, lang, ours_dict in (("source", ours[0], self.src_dict), ("target", ours[1], self.tgt_dict)):
            dict_path = os.path.join(teacher_data, f"dict.{lang}.txt")
            if not os.path.isfile(dict_path):
                logger.warning(f"cannot compare the teacher's {side} dictionary: {dict_path} not found")
                continue
            check_same_dictionary(side, Dictionary.load(dict_path), ours_dict, dict_path)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """Train as fairseq does, first telling a phased criterion (``set_update_num``) the update number."""
        if hasattr(criterion, "set_update_num"):
            criterion.set_update_num(update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def teacher_outputs(self, model: nn.Module, sample: dict) -> ModelOutputs:
        """The teacher's logits and hidden states for ``sample``, without gradients."""
        if self.teacher is None:
            raise RuntimeError("no teacher loaded: build the student with this task's build_model first")
        param = next(model.parameters())
        dtype = resolve_teacher_dtype(self.cfg.teacher_dtype, param.dtype)
        if next(self.teacher.parameters()).device != param.device or next(self.teacher.parameters()).dtype != dtype:
            self.teacher.to(device=param.device, dtype=dtype)
            logger.info(f"teacher on {param.device} in {dtype} (student: {param.dtype}, "
                        f"--teacher-dtype {self.cfg.teacher_dtype})")
        try:
            with torch.no_grad():
                return forward_with_states(self.teacher, sample["net_input"])
        except (RuntimeError, NotImplementedError) as err:
            if dtype in (torch.float16, torch.bfloat16) and "not implemented for" in str(err):
                raise RuntimeError(
                    f"the teacher cannot run in {dtype} on {param.device}: {err}. This torch build has no "
                    f"{dtype} kernel for one of its operations there; pass --teacher-dtype fp32 (or train on a GPU)"
                ) from err
            raise


def teacher_direction(teacher_task) -> Tuple[Optional[Tuple[str, str]], str]:
    """The teacher's (source, target) languages and where they come from, or ``(None, why not)``.

    The task config's ``source_lang``/``target_lang`` when both are set; otherwise what fairseq
    itself inferred when the teacher was trained without them: the pair in the first binarized
    split file name of its data folder (``train.de-en.de.bin`` -> de->en,
    ``fairseq.data.data_utils.infer_language_pair``).
    """
    pair = (teacher_task.get("source_lang"), teacher_task.get("target_lang"))
    if all(pair):
        return (pair[0], pair[1]), "from its task config"
    folder = (teacher_task.get("data") or "").split(os.pathsep)[0]
    if not folder or not os.path.isdir(folder):
        return None, (f"its config names no languages and its data folder {folder or '(none recorded)'} does not "
                      "exist; pass a teacher trained with --source-lang/--target-lang")
    inferred = data_utils.infer_language_pair(folder)
    if not all(inferred):
        return None, f"its config names no languages and its data folder {folder} holds no binarized split"
    return (inferred[0], inferred[1]), f"inferred from the split files of its data folder {folder}"


def read_task_state(path: Path) -> dict:
    """The task state a fairseq checkpoint saved (``task_state``), or {} (none saved, or a file torch cannot read:
    fairseq reports that itself when it loads the checkpoint). The tensors are memory-mapped, not read."""
    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except RuntimeError:  # a checkpoint of torch's legacy format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch/pickle raise many types for a broken file
        logger.debug(f"cannot read the task state of {path}: {err}")
        return {}
    found = state.get("task_state") if isinstance(state, dict) else None
    return found if isinstance(found, dict) else {}


def record_language_pair(cfg) -> None:
    """Write the task's language pair into the config that fairseq-train saves in checkpoints.

    fairseq infers a missing ``--source-lang``/``--target-lang`` from the data folder at task
    setup, but only on the task's own merged copy of the config; the copy that the trainer
    saves (the parent config's ``task``) keeps ``None``. Later readers of the checkpoint (a
    distillation run using it as teacher, the translation tool) then see the direction.
    """
    parent = cfg._get_parent() if OmegaConf.is_config(cfg) else None
    saved = parent.get("task") if OmegaConf.is_config(parent) and "task" in parent else None
    if not OmegaConf.is_config(saved) or saved is cfg or saved.get("_name") != cfg.get("_name"):
        return
    with open_dict(saved):
        for key in ("source_lang", "target_lang"):
            if saved.get(key) is None:
                saved[key] = cfg[key]


def check_same_dictionary(side: str, teacher: Dictionary, student: Dictionary, teacher_path: str = "") -> None:
    """Raise a ValueError naming the first difference if two dictionaries are not identical."""
    if teacher.symbols == student.symbols:
        return
    first = next((i for i, (a, b) in enumerate(zip(teacher.symbols, student.symbols)) if a != b), min(len(teacher), len(student)))
    show = lambda d: repr(d.symbols[first]) if first < len(d) else "<end>"  # noqa: E731
    raise ConfigError(
        f"the teacher's {side} dictionary ({teacher_path or 'teacher'}, {len(teacher)} types) differs from the "
        f"student's ({len(student)} types) at index {first}: {show(teacher)} vs {show(student)}. Binarize the "
        f"student's data with the teacher's dictionaries (fairseq-preprocess --srcdict/--tgtdict), or train "
        f"the teacher on this data-bin"
    )
