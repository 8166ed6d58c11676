"""``fairseq-train`` that also records, per rank, what each update did (for the distributed tests).

``python -m tests.e2e.ddp_probe ARGS...`` runs ``fairseq_cli.train`` with ARGS. When the
environment variable ``PET_PROBE_DIR`` is set, every process (torchrun's, or the ones fairseq's
launcher spawns, which import this module again as ``__mp_main__``) writes
``PET_PROBE_DIR/rank{R}.pt`` after every update: the gradients each update applied to the
student and to the criterion (after fairseq's all-reduce and normalisation), the current
student, criterion and teacher weights and dtypes, the world size, and the ids of the sentences
of every batch this rank trained on; and appends the path of every checkpoint file the rank
writes to ``PET_PROBE_DIR/saves_rank{R}.txt``.
"""

from __future__ import annotations

import os
import sys

import torch

# isort: off
from fairseq_cli import train  # first: it configures logging as fairseq-train does, before fairseq logs anything

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.trainer import Trainer  # noqa: E402
# isort: on

PROBE_DIR = os.environ.get("PET_PROBE_DIR")


def _cpu_copy(named) -> dict:
    return {name: tensor.detach().float().cpu().clone() for name, tensor in named}


def install(probe_dir: str) -> None:
    """Wrap ``Trainer.train_step`` so that each rank records its updates under ``probe_dir``."""
    original = Trainer.train_step
    if getattr(original, "_pet_probe", False):
        return

    def train_step(self: Trainer, samples, raise_oom: bool = False):
        ids = [s["id"].tolist() for s in samples if s and "id" in s]
        logging_output = original(self, samples, raise_oom)
        record = getattr(self, "_pet_probe_record", None)
        if record is None:
            record = self._pet_probe_record = {"grads": [], "batches": []}
        params = list(self.get_model().named_parameters()) + [
            (f"criterion.{n}", p) for n, p in self.get_criterion().named_parameters()]
        record["grads"].append(_cpu_copy((n, p.grad) for n, p in params if p.grad is not None))
        record["batches"].append(ids)
        record["model"] = _cpu_copy(self.get_model().state_dict().items())
        record["criterion"] = _cpu_copy(self.get_criterion().state_dict().items())
        teacher = getattr(self.task, "teacher", None)
        record["teacher"] = _cpu_copy(teacher.state_dict().items()) if teacher is not None else {}
        record["teacher_dtype"] = str(next(teacher.parameters()).dtype) if teacher is not None else None
        record["model_dtype"] = str(next(self.get_model().parameters()).dtype)
        record["world_size"] = self.data_parallel_world_size
        record["num_updates"] = self.get_num_updates()
        torch.save(record, os.path.join(probe_dir, f"rank{self.data_parallel_rank}.pt"))
        return logging_output

    train_step._pet_probe = True
    Trainer.train_step = train_step

    original_save = checkpoint_utils.torch_persistent_save

    def torch_persistent_save(obj, filename, *args, **kwargs):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(os.path.join(probe_dir, f"saves_rank{rank}.txt"), "a", encoding="utf-8") as log:
            log.write(f"{filename}\n")
        return original_save(obj, filename, *args, **kwargs)

    checkpoint_utils.torch_persistent_save = torch_persistent_save


if PROBE_DIR:
    install(PROBE_DIR)

if __name__ == "__main__":
    sys.argv[0] = "fairseq-train"
    train.cli_main()
