"""Multi-process training helpers: torchrun's environment, reductions, CPU-capable SyncBatchNorm, samplers.

torch's SyncBatchNorm runs on CUDA only; `CPUSyncBatchNorm` gives the same statistics on
CPU/gloo, so a 2-process CPU run equals a 1-process run on the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from gpunet.device import resolve_device
from gpunet.errors import DistributedError


@dataclass
class DistInfo:
    """This process's place in the run: process count, rank, rank on its node, device.

    `launched`: torchrun started this process (its rendezvous variables are set), so there is a
    process group, even for one process. `control_group`: the group for host-side control
    messages (the stop flag): gloo, so reading them never waits for the GPU's queue; None means
    the default group, which is gloo already on CPU.
    """

    world_size: int
    rank: int
    local_rank: int
    device: torch.device
    launched: bool = False
    control_group: Any = None

    @property
    def distributed(self) -> bool:
        """A process group exists: the model is under DDP and results are reduced over processes."""
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """torchrun's environment -> process group (NCCL on GPU, gloo on CPU) and this process's device.

    `device` as `gpunet.device.resolve_device` reads it; a plain `cuda` means this process's
    local rank's GPU under torchrun, else the current one. Under torchrun the group is created
    for any number of processes (one included: the run then goes through DDP and NCCL exactly as
    a multi-GPU one does); a plain process (no torchrun variables) runs without one.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    if world > 1 and not launched:
        raise DistributedError(f"WORLD_SIZE={world} but MASTER_ADDR is not set: start multi-process runs with "
                               "torchrun (e.g. torchrun --nproc-per-node N -m gpunet train ...)")
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local if launched else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    control = None
    if launched:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        if dist.get_backend() != "gloo":
            control = dist.new_group(backend="gloo")
    return DistInfo(world, rank, local, dev, launched, control)


def any_process_flag(value: int, info: DistInfo) -> int:
    """The largest of every process's `value` (a host-side flag such as a signal number; 0: none).

    Runs on the gloo control group with a CPU tensor, so it never synchronises with the GPU; in a
    single plain process it is `value` itself.
    """
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control_group)
    return int(t.item())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)"
                               ) from None


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> list[float]:
    """`values` summed over all processes (float64; as is in a single process)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=info.device)
    if info.distributed:
        dist.all_reduce(t)
    return t.tolist()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Synchronised BatchNorm that also works on CPU (gloo): torch's SyncBatchNorm is GPU-only.

    Batch statistics are summed over all processes with autograd-aware all_reduce, so the
    forward and backward equal one process seeing the whole global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        n_local = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n_local])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> CPUSyncBatchNorm with the same parameters and buffers (same state_dict keys)."""
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_cpu_sync_batchnorm(child))
    return out


class ResumableDistributedSampler(DistributedSampler):
    """torch's DistributedSampler (order from seed + epoch) that can skip the first `skip` samples."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class ShardSampler(Sampler[int]):
    """Evaluation shard rank::world, no padding (metrics are summed over ranks, exact)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
