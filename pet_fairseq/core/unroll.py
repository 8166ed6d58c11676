"""Unroll a PET student into a standard fairseq ``transformer`` checkpoint.

A PET student is a standard Transformer whose layers share weights: depth ``d`` of a stack applies
unique layer ``plan[d].index``, and a ``~`` step is that layer with its self-attention's query and
key projections traded. Decoder cross-attention may reuse the self-attention's query projection.
Unrolling writes one ordinary layer per depth:

* ``{side}.unique_layers.I.*``  ->  ``{side}.layers.D.*`` for every depth ``D`` whose step is ``I``
  (a copy per depth, so the file is what a serving stack loads: no sharing left);
* a ``~`` step: ``self_attn.q_proj.*`` := unique ``self_attn.k_proj.*`` and vice versa;
* decoder query sharing: ``encoder_attn.q_proj.*`` := unique ``self_attn.q_proj.*`` (the
  cross-attention keeps the *unswapped* projection, as :class:`ReusedLayer` does);
* everything else (embeddings, final layer norms, output projection) unchanged.

The configuration becomes ``--arch transformer --task translation`` without ``--user-dir``, and
only what inference needs is kept (no optimizer state, no criterion state such as the KD
projections), so plain ``fairseq-generate DATA --path OUT.pt`` loads it without this plugin and
computes the same function.

Plain ``fairseq-generate`` (0.12) must also be given ``--required-batch-size-multiple 1``: without it,
it drops the last batch of the test set when that batch's size is not a multiple of 8 (fairseq
issue #5036; 96 of 100 sentences translated), which the plugin fixes only when it is loaded.
Nothing stored in the checkpoint can change that: fairseq-generate batches with its own
command-line options (a stored ``dataset.required_batch_size_multiple`` is not read), so the
unroll log says it (:data:`PLAIN_FAIRSEQ_NOTE`).

``python -m pet_fairseq.export unroll`` writes such a checkpoint (:func:`unroll_checkpoint`); the
conversion to CTranslate2 (:mod:`pet_fairseq.core.ctranslate2.convert`) unrolls first. A checkpoint
that cannot be unrolled raises :class:`~pet_fairseq.core.errors.ExportError`.
"""

import argparse
import contextlib
import copy
import dataclasses
import enum
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from pet_fairseq.core.checkpoint import inference_state, read_checkpoint
from pet_fairseq.core.errors import ExportError, InputError
from pet_fairseq.sharing import LayerPlan

logger = logging.getLogger("pet_fairseq.export")

PET_MODEL = "pet_transformer"
STANDARD_MODEL = "transformer"
PLUGIN_TASKS = ("pet_distillation", "pet_warmup")
#: model options that only the PET model knows; dropped from the exported configuration
PET_MODEL_OPTIONS = ("encoder_layer_plan", "decoder_layer_plan", "no_decoder_query_sharing",
                     "encoder_self_attention", "decoder_self_attention")
#: task options that only the plugin's tasks know (``DistillationConfig``/``WarmupConfig`` extras)
PLUGIN_TASK_OPTIONS = ("teacher_path", "confidence_threshold")
#: logged with every unrolled checkpoint written: what plain fairseq-generate needs to decode every sentence
PLAIN_FAIRSEQ_NOTE = ("plain fairseq-generate (no --user-dir) needs --required-batch-size-multiple 1 with it: "
                      "otherwise fairseq 0.12 drops the last batch when its size is not a multiple of 8 "
                      "(fairseq issue #5036)")


@dataclasses.dataclass
class UnrollSummary:
    """What :func:`unroll_state` did, for the log and the tests."""

    source_model: str
    source_arch: str
    encoder_plan: str
    decoder_plan: str
    query_sharing: bool
    unique_parameters: int
    unrolled_parameters: int
    already_standard: bool = False

    def describe(self) -> str:
        if self.already_standard:
            return (f"{self.source_arch} is already a standard fairseq transformer: weights copied unchanged "
                    f"({self.unrolled_parameters:,} parameters), training state and plugin options dropped")
        return (f"{self.source_arch}: encoder {self.encoder_plan}, decoder {self.decoder_plan}"
                f"{', cross-attention query shared' if self.query_sharing else ''} -> transformer with "
                f"{len(self.encoder_plan.split(','))}+{len(self.decoder_plan.split(','))} layers; "
                f"{self.unique_parameters:,} unique parameters -> {self.unrolled_parameters:,} stored")


# --------------------------------------------------------------------------------------------
# configuration


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain Python data (dict/list/str/number/bool/None), loadable by ``weights_only``.

    fairseq-train stores ``cfg.model`` as an ``argparse.Namespace``; torch >= 2.6 refuses to
    unpickle that without an allow-list, which only this plugin installs. Plain data loads anywhere.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if hasattr(value, "items"):  # dict, DictConfig
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, enum.Enum):
        return value.name
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy / torch scalar
        return value.item()
    raise ExportError(f"cannot export configuration entry {where} of type {type(value).__name__}")


def _config(state: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """The checkpoint's configuration as a plain dict with ``model``/``task``/``common``... sections."""
    cfg = state.get("cfg")
    if cfg is None:  # pre-hydra checkpoint: everything in ``args``
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(state["args"])
    cfg = _plain(cfg, "cfg")
    if not isinstance(cfg.get("model"), dict):
        raise ExportError(f"{path}: the checkpoint's configuration has no model section")
    return cfg


def _model_kind(model_cfg: Dict[str, Any], path: Path) -> Tuple[str, str]:
    """(registered model name, architecture) of a model configuration; an error for unsupported ones."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    arch = model_cfg.get("arch") or model_cfg.get("_name")
    if arch not in ARCH_MODEL_NAME_REGISTRY:
        raise ExportError(f"{path}: unknown architecture {arch!r}; export handles pet_transformer students "
                          "(--arch pet_iwslt_de_en, pet_wmt_en_de, pet_transformer) and fairseq transformers")
    model = ARCH_MODEL_NAME_REGISTRY[arch]
    if model not in (PET_MODEL, STANDARD_MODEL):
        raise ExportError(f"{path}: architecture {arch!r} is a {model!r} model, not a translation Transformer; "
                          f"export handles {PET_MODEL} students and fairseq {STANDARD_MODEL} checkpoints")
    factored = sorted(k for k, v in model_cfg.items() if k.startswith("kronecker_") and v)
    if factored:
        raise ExportError(f"{path}: Kronecker-factored weights ({', '.join('--' + k.replace('_', '-') for k in factored)}) "
                          "cannot be exported yet: export handles dense PET students (layer plans, query sharing)")
    return model, arch


def _resolved_model_args(model_cfg: Dict[str, Any], arch: str) -> argparse.Namespace:
    """The model options with the architecture's defaults applied (as fairseq-train resolved them)."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    args = argparse.Namespace(**copy.deepcopy(model_cfg))
    ARCH_CONFIG_REGISTRY[arch](args)
    return args


def _refuse_linear_attention(args: argparse.Namespace, path: Path) -> None:
    """Plain fairseq has only softmax attention: a linear-attention student has no standard equivalent."""
    from pet_fairseq.models.pet_transformer import self_attention_kind

    linear = [f"--{side}-self-attention linear" for side in ("encoder", "decoder")
              if self_attention_kind(args, side) == "linear"]
    if linear:
        raise ExportError(f"{path}: the student uses linear self-attention ({', '.join(linear)}), which a standard "
                          "fairseq transformer (and CTranslate2) cannot run; decode it with --user-dir pet_fairseq "
                          "instead, or export a softmax-attention student")


def plans(args: argparse.Namespace) -> Tuple[LayerPlan, LayerPlan]:
    """Encoder and decoder layer plans of a (resolved) PET model configuration."""
    out = []
    for side in ("encoder", "decoder"):
        text = getattr(args, f"{side}_layer_plan", "") or ""
        out.append(LayerPlan.parse(text, f"--{side}-layer-plan") if text
                   else LayerPlan.unshared(getattr(args, f"{side}_layers")))
    return out[0], out[1]


def query_sharing(args: argparse.Namespace) -> bool:
    """Whether the PET decoder shares W_Q between self- and cross-attention (as the model does)."""
    return not getattr(args, "no_decoder_query_sharing", False) and not getattr(args, "no_cross_attention", False)


def standard_config(cfg: Dict[str, Any], model_args: argparse.Namespace, arch: str) -> Dict[str, Any]:
    """``cfg`` for a plain fairseq checkpoint: ``arch``, task ``translation``, no ``--user-dir``."""
    from fairseq.tasks.translation import TranslationConfig

    cfg = copy.deepcopy(cfg)
    model = {k: v for k, v in vars(model_args).items()
             if k not in PET_MODEL_OPTIONS + PLUGIN_TASK_OPTIONS and not k.startswith("kronecker_")}
    model.update(_name=arch, arch=arch, user_dir=None)
    if model.get("task") in PLUGIN_TASKS:
        model["task"] = "translation"
    if model.get("criterion") in ("pet_kd", "pet_warmup"):
        model["criterion"] = "label_smoothed_cross_entropy"
    cfg["model"] = _plain(model, "cfg.model")
    translation_fields = {f.name for f in dataclasses.fields(TranslationConfig)}
    task = cfg.get("task") or {}
    if task.get("_name", "translation") not in PLUGIN_TASKS + ("translation",):
        raise ExportError(f"task {task.get('_name')!r} is not a translation task")
    cfg["task"] = {k: v for k, v in task.items() if k in translation_fields}
    cfg["task"]["_name"] = "translation"
    if isinstance(cfg.get("common"), dict):
        cfg["common"]["user_dir"] = None
    criterion = cfg.get("criterion")
    if isinstance(criterion, dict) and criterion.get("_name") in ("pet_kd", "pet_warmup"):
        cfg["criterion"] = {"_name": "label_smoothed_cross_entropy",
                            "label_smoothing": criterion.get("label_smoothing", 0.1),
                            "sentence_avg": criterion.get("sentence_avg", False)}
    return cfg


# --------------------------------------------------------------------------------------------
# weights

_UNIQUE = re.compile(r"^(encoder|decoder)\.unique_layers\.(\d+)\.(.+)$")
_SWAP = {"self_attn.q_proj.": "self_attn.k_proj.", "self_attn.k_proj.": "self_attn.q_proj."}


def _swapped(name: str) -> str:
    for prefix, other in _SWAP.items():
        if name.startswith(prefix):
            return other + name[len(prefix):]
    return name


def unroll_weights(model_state: Dict[str, torch.Tensor], encoder_plan: LayerPlan, decoder_plan: LayerPlan,
                   share_query: bool) -> Dict[str, torch.Tensor]:
    """A standard Transformer state dict: one materialised copy of the right unique layer per depth."""
    unique: Dict[str, Dict[int, Dict[str, torch.Tensor]]] = {"encoder": {}, "decoder": {}}
    out: Dict[str, torch.Tensor] = {}
    for key, tensor in model_state.items():
        match = _UNIQUE.match(key)
        if match:
            unique[match.group(1)].setdefault(int(match.group(2)), {})[match.group(3)] = tensor
        elif key.startswith(("encoder.layers.", "decoder.layers.")):
            raise ExportError(f"unexpected key {key} in a PET student (views store no weights)")
        else:
            out[key] = tensor
    for side, plan in (("encoder", encoder_plan), ("decoder", decoder_plan)):
        found = sorted(unique[side])
        if found != list(range(plan.num_unique)):
            raise ExportError(f"{side}: the checkpoint has unique layers {found} but the plan {plan} "
                              f"needs 0..{plan.num_unique - 1}")
        for depth, step in enumerate(plan.steps):
            layer = unique[side][step.index]
            for name, tensor in layer.items():
                target = _swapped(name) if step.swap_qk else name
                out[f"{side}.layers.{depth}.{target}"] = tensor.clone()
            if side == "decoder" and share_query:
                for p in ("weight", "bias"):
                    out[f"decoder.layers.{depth}.encoder_attn.q_proj.{p}"] = layer[f"self_attn.q_proj.{p}"].clone()
    return out


def count_unique_elements(model_state: Dict[str, torch.Tensor]) -> int:
    """Elements of the floating-point tensors, each storage once (buffers such as ``version`` excluded)."""
    seen = {}
    for key, tensor in model_state.items():
        if tensor.is_floating_point() and not key.endswith(("_float_tensor", ".version")):
            seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())] = tensor.numel()
    return sum(seen.values())


# --------------------------------------------------------------------------------------------
# checkpoints


def unroll_state(state: Dict[str, Any], path: Path = Path("<checkpoint>")) -> Tuple[Dict[str, Any], UnrollSummary]:
    """A loaded fairseq checkpoint -> (standard fairseq transformer checkpoint, summary)."""
    cfg = _config(state, path)
    kind, arch = _model_kind(cfg["model"], path)
    args = _resolved_model_args(cfg["model"], arch)
    if kind == STANDARD_MODEL:
        weights = dict(state["model"])
        enc_plan = LayerPlan.unshared(args.encoder_layers)
        dec_plan = LayerPlan.unshared(args.decoder_layers)
        shared, out_arch = False, arch
    else:
        _refuse_linear_attention(args, path)
        enc_plan, dec_plan = plans(args)
        shared = query_sharing(args)
        weights = unroll_weights(state["model"], enc_plan, dec_plan, shared)
        args.encoder_layers, args.decoder_layers = enc_plan.depth, dec_plan.depth
        out_arch = STANDARD_MODEL
    out = inference_state(state)
    out.update(args=None, model=weights, cfg=standard_config(cfg, args, out_arch))
    out["optimizer_history"] = _plain(out.get("optimizer_history"), "optimizer_history")
    out["extra_state"] = _plain(out.get("extra_state"), "extra_state")
    if not out.get("task_state"):
        out.pop("task_state", None)
    summary = UnrollSummary(
        source_model=kind, source_arch=arch, encoder_plan=str(enc_plan), decoder_plan=str(dec_plan),
        query_sharing=shared, unique_parameters=count_unique_elements(state["model"]),
        unrolled_parameters=count_unique_elements(weights), already_standard=kind == STANDARD_MODEL,
    )
    return out, summary


@contextlib.contextmanager
def export_errors() -> Iterator[None]:
    """Re-raise an :class:`InputError` of the core's readers and checks as an :class:`ExportError`."""
    try:
        yield
    except InputError as exc:
        raise ExportError(str(exc)) from exc


def read_student(path: "str | os.PathLike") -> Dict[str, Any]:
    """Load a checkpoint, turning any reading problem into an :class:`ExportError`."""
    with export_errors():
        return read_checkpoint(path)


def _toy_dictionary(size: int):
    from fairseq.data import Dictionary

    d = Dictionary()
    while len(d) < size:
        d.add_symbol(f"<sym{len(d)}>")
    return d


def build_from_config(cfg: Dict[str, Any], weights: Dict[str, torch.Tensor]):
    """Build the model a configuration describes on stand-in dictionaries and load ``weights`` strictly."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    args = argparse.Namespace(**copy.deepcopy(cfg["model"]))
    src = _toy_dictionary(weights["encoder.embed_tokens.weight"].shape[0])
    tgt = src if getattr(args, "share_all_embeddings", False) else _toy_dictionary(
        weights["decoder.embed_tokens.weight"].shape[0])
    task = TranslationTask(TranslationConfig(), src, tgt)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
    model.load_state_dict(weights, strict=True, model_cfg=None)
    return model.eval()


def verify(original: Dict[str, Any], unrolled: Dict[str, Any], tolerance: float = 1e-4, seed: int = 0) -> float:
    """Largest |difference| of the decoder outputs of both models on a random batch; raises above ``tolerance``."""
    before = build_from_config(_config(original, Path("<original>")), original["model"])
    after = build_from_config(unrolled["cfg"], unrolled["model"])
    if any(type(m).__name__.startswith("PET") for m in after.modules()):
        raise ExportError("the unrolled model still uses PET modules")
    g = torch.Generator().manual_seed(seed)
    vocab_src, vocab_tgt = before.encoder.embed_tokens.num_embeddings, before.decoder.embed_tokens.num_embeddings
    src = torch.randint(4, vocab_src, (3, 9), generator=g)
    src[:, -1] = 2
    lengths = torch.full((3,), 9)
    prev = torch.randint(4, vocab_tgt, (3, 7), generator=g)
    prev[:, 0] = 2
    with torch.no_grad():
        difference = (before(src, lengths, prev)[0] - after(src, lengths, prev)[0]).abs().max().item()
    if not difference <= tolerance:
        raise ExportError(f"the unrolled model differs from the student by {difference:.3g} (> {tolerance})")
    return difference


def check_output(student: Path, out: Path, force: bool, flag: str = "OUT") -> None:
    """Refuse an output checkpoint that is a folder, the student itself, or (without ``force``) an existing file."""
    if out.is_dir():
        raise ExportError(f"{flag} {out} is a folder; pass a file name for the unrolled checkpoint (.pt)")
    if out.exists() and student.exists() and os.path.samefile(out, student):
        raise ExportError(f"{flag} {out} is the student checkpoint {student}: unrolling never overwrites its "
                          "input; choose another output file")
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to overwrite it, or choose another output file")


def save_atomic(state: Dict[str, Any], out: Path) -> None:
    """``torch.save`` to a temporary file next to ``out``, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def unroll_checkpoint(student: "str | os.PathLike", out: "str | os.PathLike", check: bool = True,
                      force: bool = False) -> UnrollSummary:
    """Write ``student`` as a standard fairseq transformer checkpoint to ``out``; see the module docstring.

    ``out`` must not be the student; an existing ``out`` is replaced only with ``force``.
    """
    student, out = Path(student), Path(out)
    check_output(student, out, force)
    state = read_student(student)
    unrolled, summary = unroll_state(state, student)
    if check:
        difference = verify(state, unrolled)
        logger.info("check: standard model == student on a random batch (max |diff| %.2g)", difference)
    save_atomic(unrolled, out)
    logger.info("%s", summary.describe())
    logger.info("wrote %s (%.2f MB); %s: %s", out, out.stat().st_size / 2**20, PLAIN_FAIRSEQ_NOTE,
                generate_command(out, unrolled["cfg"]))
    return summary


def generate_command(out: Path, cfg: Dict[str, Any]) -> str:
    """The plain ``fairseq-generate`` command for the unrolled checkpoint ``out``, with the option it needs."""
    task = cfg.get("task") or {}
    langs = (f" --source-lang {task['source_lang']} --target-lang {task['target_lang']}"
             if task.get("source_lang") and task.get("target_lang") else "")
    return (f"fairseq-generate {model_dictionary_dir(cfg) or 'DATA_BIN'} --path {out}{langs} "
            "--required-batch-size-multiple 1")


def model_dictionary_dir(cfg: Dict[str, Any]) -> Optional[Path]:
    """The data-bin the model was trained on (``cfg.task.data``, first shard), if recorded."""
    data = (cfg.get("task") or {}).get("data")
    return Path(str(data).split(os.pathsep)[0]) if data else None
