"""torchrun/DDP support that also works unchanged as a single process.

Under ``torchrun --nproc_per_node=N`` the environment holds RANK, WORLD_SIZE and LOCAL_RANK;
:func:`init_distributed` joins the process group (nccl on CUDA, gloo on CPU). Without them
every helper here behaves as the single process it is.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from shared.errors import UserError


def is_distributed() -> bool:
    """True when a process group is active."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank (0 in a single process; read from RANK before the group is joined)."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    """Number of processes (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", 1))


def get_local_rank() -> int:
    """Rank on this node (selects the GPU)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0: the one process that logs and writes files."""
    return get_rank() == 0


def init_distributed(device: torch.device | None = None, timeout_s: int = 1800) -> bool:
    """Join the torchrun process group when launched by torchrun; return whether distributed.

    The backend is nccl for CUDA devices and gloo otherwise. Safe to call more than once.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun")
    use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    """Leave the process group (no-op when none is active); call on exit, errors included."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """Mean of ``value`` over all processes, as a new tensor (a copy in a single process)."""
    return all_reduce_sum(value) / get_world_size()


def all_reduce_sum(value: torch.Tensor | float) -> torch.Tensor:
    """Sum of ``value`` over all processes, as a new tensor (e.g. correct/total counts)."""
    tensor = value.detach().clone() if torch.is_tensor(value) else torch.tensor(float(value), dtype=torch.float64)
    if not is_distributed():
        return tensor
    home = tensor.device
    if dist.get_backend() == "nccl" and home.type != "cuda":
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.to(home)


def wrap_model(model: nn.Module, device: torch.device, **ddp_kwargs) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it in DDP when distributed (returned as is otherwise)."""
    model = model.to(device)
    if not is_distributed():
        return model
    device_ids = [device.index if device.index is not None else get_local_rank()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
