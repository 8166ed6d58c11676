"""What fairseq 0.12 needs to train our tasks as one data-parallel job (torchrun, its own launcher, CPU).

fairseq sizes its distributed setup by the number of visible GPUs, which breaks on CPU and under
``torchrun``; and it wraps a criterion that has parameters (``pet_kd``'s KD projections) in a
``DistributedDataParallel`` of its own, which all-reduces only the parameters a forward pass used
(and fails at the next step when it used only some of them). This module holds the replacements
that :func:`pet_fairseq.compat.fix_distributed_training` installs when the plugin is imported
(every fairseq CLI imports ``--user-dir`` while parsing its arguments, before it starts any
process). The student's own forward pass must go through its DDP wrapper for its gradients to be
averaged; :func:`pet_fairseq.tasks.distillation.forward_with_states` makes sure of that.

- :func:`prepare_distributed_launch` fills in ``cfg.distributed_training`` from torchrun's
  environment or from ``--distributed-world-size``/``--distributed-port``;
- :func:`spawn_cpu_processes` starts the CPU processes fairseq's own launcher would not start;
- :func:`distributed_wrapper` builds CPU ``DistributedDataParallel`` models and wraps criteria in
  :class:`CriterionGradientSync`;
- :func:`broadcast_object_slow` lets the other ranks receive rank 0's checkpoint when a run resumes.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from collections import defaultdict
from typing import Callable, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from pet_fairseq.compat import allow_bf16_without_tpu
from pet_fairseq.core.errors import ConfigError

logger = logging.getLogger(__name__)

#: the variables torchrun (and torch.distributed.launch) set for every process
TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def uses_gpu(cfg) -> bool:
    """Whether fairseq's trainer will put the model on a GPU (CUDA visible and no ``--cpu``/``--tpu``)."""
    return torch.cuda.is_available() and not cfg.common.cpu and not cfg.common.tpu


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def prepare_distributed_launch(cfg, environ: Optional[Mapping[str, str]] = None) -> None:
    """Fill in ``cfg.distributed_training`` so that fairseq 0.12 runs one data-parallel job.

    What fairseq 0.12 does by itself:

    - ``--distributed-world-size`` defaults to ``max(1, torch.cuda.device_count())``, i.e. 1 on
      CPU, and ``infer_init_method`` returns at world size 1 before it reads torchrun's
      ``WORLD_SIZE``/``RANK``: every torchrun process trains alone as rank 0 of 1, all writing
      the same ``--save-dir``;
    - with ``--distributed-world-size N`` under torchrun it takes the device as
      ``RANK % device_count()``: a ZeroDivisionError on CPU; ``LOCAL_RANK`` is ignored;
    - its own launcher (``--distributed-init-method tcp://...``) starts
      ``min(device_count(), N)`` processes: none on CPU, and it exits 0 having trained nothing;
      ``--distributed-port`` without SLURM leaves the job uninitialised (it crashes at the first
      collective);
    - its default ``--distributed-backend nccl`` cannot run on CPU.

    What this does instead: under torchrun (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` and
    ``RANK`` set, ``WORLD_SIZE`` > 1) it uses ``env://`` with torchrun's world size and rank and
    ``LOCAL_RANK`` as the GPU; otherwise, for ``--distributed-world-size N`` > 1 without an init
    method and outside SLURM, it uses ``tcp://localhost:PORT`` with ``--distributed-port`` (or a
    free port) for fairseq's single-machine launcher; on CPU it selects gloo. A torchrun job
    whose explicit ``--distributed-init-method``/``--distributed-world-size`` disagree with
    ``WORLD_SIZE`` is a ValueError. SLURM without torchrun is left to fairseq. ``environ``
    defaults to ``os.environ``.
    """
    from omegaconf import open_dict

    environ = os.environ if environ is None else environ
    dist_cfg = cfg.distributed_training
    if cfg.common.tpu:
        return
    gpu = uses_gpu(cfg)
    with open_dict(dist_cfg):
        if all(key in environ for key in TORCHRUN_VARIABLES) and int(environ["WORLD_SIZE"]) > 1:
            world, rank = int(environ["WORLD_SIZE"]), int(environ["RANK"])
            if dist_cfg.distributed_init_method is None:
                local_rank = environ.get("LOCAL_RANK")
                dist_cfg.distributed_init_method = "env://"
                dist_cfg.distributed_world_size = world
                dist_cfg.distributed_rank = rank
                if local_rank is not None:
                    dist_cfg.device_id = int(local_rank)
                else:
                    dist_cfg.device_id = rank % torch.cuda.device_count() if gpu else 0
                dist_cfg.distributed_no_spawn = True  # torchrun started the processes
            elif dist_cfg.distributed_world_size != world:
                raise ConfigError(
                    f"torchrun started {world} processes (WORLD_SIZE={world}) but fairseq was given "
                    f"--distributed-init-method {dist_cfg.distributed_init_method} and --distributed-world-size "
                    f"{dist_cfg.distributed_world_size}: the processes would not form one job and would overwrite "
                    "each other's checkpoints. Under torchrun drop --distributed-init-method (env:// is used), or "
                    f"pass --distributed-world-size {world}"
                )
        elif (
            dist_cfg.distributed_world_size > 1
            and dist_cfg.distributed_init_method is None
            and "SLURM_STEP_NODELIST" not in environ
            and "SLURM_JOB_NODELIST" not in environ
        ):
            if dist_cfg.distributed_no_spawn:
                raise ConfigError(
                    "--distributed-no-spawn: each process of the job must be told where to meet; pass "
                    "--distributed-init-method tcp://HOST:PORT (the same for all) and --distributed-rank R (its own), "
                    "or start the processes with torchrun"
                )
            if dist_cfg.distributed_port <= 0:
                dist_cfg.distributed_port = free_port()
            dist_cfg.distributed_init_method = f"tcp://localhost:{dist_cfg.distributed_port}"
        if dist_cfg.distributed_init_method is None or dist_cfg.distributed_world_size <= 1:
            return
    if cfg.get("bmuf") is not None and "distributed_world_size" in cfg.bmuf:
        with open_dict(cfg.bmuf):  # a copy fairseq resolved before the world size was known (printed in the log)
            cfg.bmuf.distributed_world_size = dist_cfg.distributed_world_size
    with open_dict(dist_cfg):
        if gpu and not dist_cfg.distributed_no_spawn and dist_cfg.distributed_world_size > torch.cuda.device_count():
            raise ConfigError(
                f"--distributed-world-size {dist_cfg.distributed_world_size}: fairseq's own launcher starts one "
                f"process per GPU of this machine, which has {torch.cuda.device_count()}. Pass at most "
                f"{torch.cuda.device_count()}, or use torchrun for several machines (docs/distributed.md)"
            )
        if not gpu and dist_cfg.distributed_backend == "nccl":
            logger.warning("--distributed-backend nccl needs GPUs; the CPU processes communicate with gloo instead")
            dist_cfg.distributed_backend = "gloo"


def spawn_cpu_processes(cfg, main: Callable, kwargs: dict) -> None:
    """Start the ``--distributed-world-size`` CPU processes of a job on this machine and wait for them.

    fairseq's launcher starts one process per GPU (none on CPU); this starts all ranks with
    fairseq's own ``distributed_main``, as its GPU path does.
    """
    from fairseq.distributed import utils as distributed_utils

    dist_cfg = cfg.distributed_training
    if dist_cfg.distributed_rank:
        raise ConfigError(
            f"--distributed-rank {dist_cfg.distributed_rank}: fairseq's own launcher starts all CPU processes of a "
            "job on one machine. For several machines use torchrun (docs/distributed.md), or start each process "
            "yourself with --distributed-no-spawn --distributed-rank R"
        )
    kwargs["start_rank"] = 0
    dist_cfg.distributed_rank = None  # distributed_main assigns start_rank + process index
    logger.info(f"starting {dist_cfg.distributed_world_size} CPU processes ({dist_cfg.distributed_init_method}, "
                f"{dist_cfg.distributed_backend})")
    torch.multiprocessing.spawn(
        fn=distributed_utils.distributed_main, args=(main, cfg, kwargs), nprocs=dist_cfg.distributed_world_size,
        join=True,
    )


class CriterionGradientSync(nn.Module):
    """Data-parallel wrapper of a criterion with parameters: averages their gradients over the ranks.

    fairseq 0.12 wraps such a criterion (e.g. ``pet_kd`` with its KD projections) in a
    ``DistributedDataParallel`` like the model's. DDP all-reduces after every backward pass, so
    once per ``--update-freq`` micro-batch (fairseq's ``no_sync`` covers only the model), and it
    fails at the next step ("Expected to have finished reduction in the prior iteration") when a
    forward pass used only some of the parameters. This wrapper instead runs the criterion as is
    and, when fairseq's trainer calls
    :meth:`all_reduce_grads` after the last backward pass of an update (with ``--update-freq``
    too), averages every gradient over the data-parallel group in one all-reduce per device and
    dtype. A gradient that no rank computed stays None, as in a single-process run (so the
    optimiser leaves that parameter alone); one that only some ranks computed counts as zero on
    the others. The parameters are broadcast from rank 0 when the wrapper is built.
    """

    def __init__(self, module: nn.Module, process_group) -> None:
        super().__init__()
        from fairseq.distributed import utils as distributed_utils

        self.module = module
        self.process_group = process_group
        self.world_size = distributed_utils.get_world_size(process_group)
        source = dist.get_global_rank(process_group, 0) if process_group is not None else 0
        with torch.no_grad():
            for param in module.parameters():
                distributed_utils.broadcast(param.data, src=source, group=process_group)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def all_reduce_grads(self) -> None:
        """Average the gradients of the criterion's trainable parameters over the ranks."""
        from fairseq.distributed import utils as distributed_utils

        groups = defaultdict(list)
        for param in self.module.parameters():
            if param.requires_grad:
                groups[(param.device, param.dtype)].append(param)
        for (device, dtype), params in groups.items():
            present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
            flat = torch.cat([
                (p.grad.detach() if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
            ]).div_(self.world_size)
            distributed_utils.all_reduce(present, self.process_group)
            distributed_utils.all_reduce(flat, self.process_group)
            offset = 0
            for param, anywhere in zip(params, present.tolist()):
                size = param.numel()
                if anywhere:
                    averaged = flat[offset : offset + size].view_as(param)
                    if param.grad is None:
                        param.grad = averaged.clone()
                    else:
                        param.grad.copy_(averaged)
                offset += size


def distributed_wrapper(original: Callable) -> Callable:
    """Replace fairseq's ``DistributedFairseqModel(args, model, process_group, device)``.

    - A criterion (``FairseqCriterion``) is wrapped in :class:`CriterionGradientSync` for the
      DDP backends (``pytorch_ddp``/``c10d``, ``legacy_ddp``/``no_c10d``).
    - A model on the CPU with ``pytorch_ddp``/``c10d`` gets a ``DistributedDataParallel`` without
      ``device_ids``: fairseq passes ``device_ids=[device_id]``, which torch rejects for CPU
      modules.
    - Everything else is fairseq's.
    """
    from torch.nn.parallel import DistributedDataParallel

    def DistributedFairseqModel(args, model, process_group, device):
        from fairseq.criterions import FairseqCriterion
        from fairseq.distributed import DistributedTimeoutWrapper, ModuleProxyWrapper

        ddp_backends = {"c10d", "pytorch_ddp", "no_c10d", "legacy_ddp"}
        if args.tpu or args.ddp_backend not in ddp_backends:
            return original(args, model, process_group, device)
        if isinstance(model, FairseqCriterion):
            wrapped = ModuleProxyWrapper(CriterionGradientSync(model.to(device), process_group))
        elif torch.device(device).type == "cpu" and args.ddp_backend in {"c10d", "pytorch_ddp"}:
            if args.ddp_comm_hook == "fp16":
                raise ConfigError("--ddp-comm-hook fp16 compresses GPU all-reduces; drop it when training on CPU")
            wrapped = ModuleProxyWrapper(DistributedDataParallel(
                module=model.to(device), broadcast_buffers=args.broadcast_buffers, bucket_cap_mb=args.bucket_cap_mb,
                process_group=process_group, find_unused_parameters=args.find_unused_parameters,
                gradient_as_bucket_view=args.gradient_as_bucket_view,
            ))
        else:
            return original(args, model, process_group, device)
        if getattr(args, "heartbeat_timeout", -1) > 0:
            wrapped = DistributedTimeoutWrapper(wrapped, timeout=args.heartbeat_timeout)
        return wrapped

    DistributedFairseqModel.__doc__ = original.__doc__
    DistributedFairseqModel._pet_wrapper = True
    return DistributedFairseqModel


def broadcast_object_slow(obj, src_rank: int, group, dist_device: torch.device):
    """fairseq's ``_broadcast_object_slow`` with the receiving ranks unpickling as torch < 2.6 did.

    When a distributed run resumes, rank 0 reads the checkpoint (with torch's safe
    ``weights_only`` loading) and sends its state to the other ranks pickled with ``torch.save``;
    fairseq unpickles it with ``torch.load``, which since torch 2.6 refuses the state's
    ``DictConfig`` and fairseq's tensor placeholders, so every rank but 0 crashed on resume. The
    bytes are the object rank 0 of the same job has just built, so they are unpickled in full.
    """
    from fairseq.distributed.utils import broadcast, get_rank

    if get_rank(group) == src_rank:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = torch.ByteTensor(buffer.getbuffer()).to(dist_device)
        length = torch.LongTensor([len(data)]).to(dist_device)
        broadcast(length, src=src_rank, group=group)
        broadcast(data, src=src_rank, group=group)
        return obj
    length = torch.LongTensor([0]).to(dist_device)
    broadcast(length, src=src_rank, group=group)
    data = torch.ByteTensor(int(length.item())).to(dist_device)
    broadcast(data, src=src_rank, group=group)
    return torch.load(io.BytesIO(data.cpu().numpy()), map_location="cpu", weights_only=False)


def call_main_wrapper(original: Callable) -> Callable:
    """Replace fairseq's ``call_main(cfg, main)``: fix the configuration, then start CPU processes or defer to fairseq.

    The configuration fixes are :func:`pet_fairseq.compat.allow_bf16_without_tpu` and
    :func:`prepare_distributed_launch`.
    """

    def call_main(cfg, main, **kwargs):
        allow_bf16_without_tpu(cfg)
        prepare_distributed_launch(cfg)
        dist_cfg = cfg.distributed_training
        if (
            dist_cfg.distributed_init_method is not None
            and dist_cfg.distributed_world_size > 1
            and not dist_cfg.distributed_no_spawn
            and not uses_gpu(cfg)
            and not cfg.common.tpu
        ):
            spawn_cpu_processes(cfg, main, kwargs)
        else:
            original(cfg, main, **kwargs)

    call_main.__doc__ = original.__doc__
    call_main._pet_launch = True
    return call_main
