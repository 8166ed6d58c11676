"""Shared test helpers: locating ../shared/data and building small models."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.tasks.translation import TranslationConfig, TranslationTask

import pet_fairseq  # noqa: F401  (registers the plugin)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PET_SHARED_DATA", REPO.parent / "shared" / "data"))
VENV_BIN = Path(os.environ.get("PET_VENV_BIN", Path(os.sys.executable).parent))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real corpus {path} not found: these tests need ../shared/data (or PET_SHARED_DATA)")
    return path


def toy_dictionary(size: int = 200) -> Dictionary:
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    d.finalize(padding_factor=8)
    return d


def toy_task(dictionary: Dictionary | None = None) -> TranslationTask:
    d = dictionary or toy_dictionary()
    return TranslationTask(TranslationConfig(), d, d)


def build(arch: str, task: TranslationTask | None = None, seed: int = 0, **overrides):
    """Build a registered architecture the way fairseq-train does (arch defaults, then build_model)."""
    torch.manual_seed(seed)
    args = argparse.Namespace(**overrides)
    ARCH_CONFIG_REGISTRY[arch](args)
    args.arch = arch
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task or toy_task())
    return model.eval()


def unique_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {p.data_ptr(): p for p in model.state_dict().values()}.values())


def write_data_dir(path: Path, dictionary: Dictionary, src: str = "de", tgt: str = "en") -> Path:
    """A data-bin folder holding only the dictionaries (enough to set up a translation task)."""
    path.mkdir(parents=True, exist_ok=True)
    for lang in (src, tgt):
        dictionary.save(str(path / f"dict.{lang}.txt"))
    return path


def make_checkpoint(path: Path, data_dir: Path, arch: str, *extra: str, task: str = "translation", seed: int = 0):
    """Build ``arch`` through fairseq's own argument parsing and save it as a real fairseq checkpoint."""
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data_dir), "--arch", arch, "--task", task, "-s", "de", "-t", "en",
                                                "--user-dir", str(REPO / "pet_fairseq"), "--dropout", "0", *extra])
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(seed)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    state = {"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": model.state_dict(),
             "args": None, "criterion": None, "extra_state": {}, "last_optimizer_state": None,
             "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}]}
    checkpoint_utils.torch_persistent_save(state, str(path))
    return path, model.eval(), cfg
