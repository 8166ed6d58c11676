"""The distributed-launch fixes for fairseq 0.12 and the criterion gradient synchronisation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from fairseq import options
from fairseq.criterions import FairseqCriterion
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from torch import nn

from pet_fairseq.compat import allow_bf16_without_tpu
from pet_fairseq.distributed import CriterionGradientSync, distributed_wrapper, prepare_distributed_launch
from tests.conftest import REPO

TORCHRUN_RANK_1 = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


def train_cfg(*extra: str):
    """The configuration fairseq-train builds from these arguments (CPU)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["data-bin", "--user-dir", str(REPO / "pet_fairseq"), "--arch", "transformer",
                                                "--task", "translation", "--cpu", *extra])
    return convert_namespace_to_omegaconf(args)


def test_torchrun_environment_makes_one_job_on_cpu():
    """fairseq alone keeps world size 1 (its default on CPU) and never reads WORLD_SIZE/RANK."""
    cfg = train_cfg()
    assert cfg.distributed_training.distributed_world_size == 1
    prepare_distributed_launch(cfg, environ=TORCHRUN_RANK_1)
    d = cfg.distributed_training
    assert (d.distributed_init_method, d.distributed_world_size, d.distributed_rank) == ("env://", 2, 1)
    assert d.device_id == 1 and d.distributed_no_spawn
    assert d.distributed_backend == "gloo"  # fairseq's default nccl cannot run on CPU
    assert cfg.bmuf.distributed_world_size == 2  # the copy fairseq prints in the log agrees


def test_torchrun_with_a_different_explicit_world_size_is_an_error():
    cfg = train_cfg("--distributed-init-method", "tcp://localhost:1234", "--distributed-world-size", "3")
    with pytest.raises(ValueError, match=r"torchrun started 2 processes \(WORLD_SIZE=2\).*--distributed-world-size 2"):
        prepare_distributed_launch(cfg, environ=TORCHRUN_RANK_1)


def test_single_process_torchrun_and_plain_runs_are_left_alone():
    for environ in ({}, {**TORCHRUN_RANK_1, "WORLD_SIZE": "1", "RANK": "0"}):
        cfg = train_cfg()
        prepare_distributed_launch(cfg, environ=environ)
        assert cfg.distributed_training.distributed_init_method is None
        assert cfg.distributed_training.distributed_world_size == 1


def test_fairseq_launcher_world_size_and_port_become_a_local_tcp_job():
    cfg = train_cfg("--distributed-world-size", "2", "--distributed-port", "29733", "--distributed-backend", "gloo")
    prepare_distributed_launch(cfg, environ={})
    d = cfg.distributed_training
    assert d.distributed_init_method == "tcp://localhost:29733" and not d.distributed_no_spawn

    cfg = train_cfg("--distributed-world-size", "2")
    prepare_distributed_launch(cfg, environ={})
    port = cfg.distributed_training.distributed_port
    assert port > 0 and cfg.distributed_training.distributed_init_method == f"tcp://localhost:{port}"


def test_slurm_is_left_to_fairseq_and_no_spawn_needs_an_init_method():
    cfg = train_cfg("--distributed-world-size", "2", "--distributed-port", "29733")
    prepare_distributed_launch(cfg, environ={"SLURM_JOB_NODELIST": "node[1-2]"})
    assert cfg.distributed_training.distributed_init_method is None
    cfg = train_cfg("--distributed-world-size", "2", "--distributed-no-spawn")
    with pytest.raises(ValueError, match="--distributed-init-method tcp://HOST:PORT"):
        prepare_distributed_launch(cfg, environ={})


def test_bf16_no_longer_implies_a_tpu_without_torch_xla():
    cfg = train_cfg("--bf16")
    assert cfg.common.tpu  # fairseq's parser ties --bf16 to --tpu
    allow_bf16_without_tpu(cfg)
    assert cfg.common.bf16 and not cfg.common.tpu


class TwoLinear(nn.Module):
    """A criterion-like module with three parameters, for the gradient-sync test."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)


def _sync_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different initial weights on each rank
        module = TwoLinear()
        sync = CriterionGradientSync(module, dist.group.WORLD)
        x = torch.full((1, 3), float(rank + 1))
        loss = module.a(x).sum() * (rank + 1)  # every rank uses a, with different gradients
        if rank == 0:
            loss = loss + module.b(x).sum()  # only rank 0 uses b; nobody uses c
        loss.backward()
        sync.all_reduce_grads()
        torch.save({"state": module.state_dict(), "grads": {n: p.grad for n, p in module.named_parameters()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_criterion_gradient_sync_averages_and_keeps_unused_gradients_none(tmp_path: Path):
    torch.multiprocessing.spawn(_sync_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in r0["state"]:  # rank 0's weights were broadcast
        assert torch.equal(r0["state"][key], r1["state"][key])
    # d/dW sum(W x) * k = k x: rank 0 has 1*1, rank 1 has 2*2 -> mean 2.5
    assert torch.allclose(r0["grads"]["a.weight"], torch.full((2, 3), 2.5))
    assert torch.equal(r0["grads"]["a.weight"], r1["grads"]["a.weight"])
    assert torch.allclose(r1["grads"]["b.weight"], torch.full((2, 3), 0.5))  # rank 0's 1.0, rank 1 counts as 0
    assert r0["grads"]["c.weight"] is None and r1["grads"]["c.weight"] is None  # the optimiser skips it, as in 1 process


class ProjectionCriterion(FairseqCriterion):
    """A criterion with a parameter (like pet_kd's projections)."""

    def __init__(self) -> None:
        super().__init__(task=None)
        self.proj = nn.Linear(2, 2)


def _wrapper_worker(rank: int, init_file: str, args, out_file: str) -> None:
    from fairseq.distributed import ModuleProxyWrapper
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=1)
    try:
        wrapper = distributed_wrapper(lambda *a, **k: "fairseq's")
        criterion = wrapper(args, ProjectionCriterion(), dist.group.WORLD, torch.device("cpu"))
        model = wrapper(args, nn.Linear(2, 2), dist.group.WORLD, torch.device("cpu"))
        result = {
            "criterion": isinstance(criterion, ModuleProxyWrapper) and isinstance(criterion.module, CriterionGradientSync),
            "criterion_attr": criterion.proj.in_features,  # attributes reach the criterion through the proxy
            "model": isinstance(model, ModuleProxyWrapper) and isinstance(model.module, DistributedDataParallel),
            "device_ids": model.module.device_ids,
        }
        torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


def test_distributed_wrapper_syncs_criteria_and_builds_cpu_ddp(tmp_path: Path):
    """fairseq's wrapper passes device_ids=[0], which DistributedDataParallel rejects for CPU modules."""
    args = train_cfg("--distributed-backend", "gloo").distributed_training
    torch.multiprocessing.spawn(_wrapper_worker, args=(str(tmp_path / "init"), args, str(tmp_path / "out.pt")), nprocs=1)
    result = torch.load(tmp_path / "out.pt")
    assert result == {"criterion": True, "criterion_attr": 2, "model": True, "device_ids": None}


def test_distributed_wrapper_leaves_other_backends_to_fairseq():
    wrapper = distributed_wrapper(lambda args, model, process_group, device: "fairseq's")
    args = train_cfg("--ddp-backend", "fully_sharded").distributed_training
    assert wrapper(args, ProjectionCriterion(), None, torch.device("cpu")) == "fairseq's"
