"""Building a real teacher checkpoint, a distillation task, a student and a criterion for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from fairseq import options, tasks
from fairseq.data.language_pair_dataset import collate
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from tests.conftest import REPO, make_checkpoint, toy_dictionary, write_data_dir

TEACHER_ARGS = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
                "--decoder-attention-heads", "2"]
STUDENT_ARGS = ["--encoder-embed-dim", "24", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "48",
                "--decoder-ffn-embed-dim", "32", "--dropout", "0"]
LAYER_MAPS = ["--encoder-layer-map", "1:2,2:4", "--decoder-layer-map", "1:1,2:4"]


def teacher_checkpoint(tmp_path: Path, vocab: int = 60):
    data = write_data_dir(tmp_path / "data", toy_dictionary(vocab))
    path, model, _ = make_checkpoint(tmp_path / "teacher.pt", data, "transformer", *TEACHER_ARGS, seed=11)
    return data, path, model


def distillation(data: Path, teacher: Path, *extra: str, task: str = "pet_distillation", criterion: str = "pet_kd"):
    """(task, student, criterion) built exactly as fairseq-train builds them."""
    parser = options.get_training_parser()
    argv = [str(data), "--user-dir", str(REPO / "pet_fairseq"), "--task", task, "--teacher-path", str(teacher),
            "-s", "de", "-t", "en", "--arch", "pet_iwslt_de_en", *STUDENT_ARGS, "--criterion", criterion, *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    task_ = tasks.setup_task(cfg.task)
    torch.manual_seed(5)
    student = task_.build_model(cfg.model)
    return task_, student, task_.build_criterion(cfg.criterion)


def toy_sample(dictionary, n: int = 4, seed: int = 0) -> dict:
    """A real collated batch with different source and target lengths (so both sides have padding)."""
    g = torch.Generator().manual_seed(seed)
    eos, vocab = dictionary.eos(), len(dictionary)
    items = []
    for i in range(n):
        src = torch.randint(4, vocab, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g)
        tgt = torch.randint(4, vocab, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g)
        items.append({"id": i, "source": torch.cat([src, torch.tensor([eos])]), "target": torch.cat([tgt, torch.tensor([eos])])})
    return collate(items, pad_idx=dictionary.pad(), eos_idx=eos)
