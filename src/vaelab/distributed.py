"""Where a run executes: its device, and its place among torchrun's processes.

Launched by ``torchrun --nproc_per_node=N -m vaelab train ...``, each process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment and joins a process group (gloo on CPU, NCCL on
GPU). Each process takes a 1/N shard of every global minibatch; gradients are averaged across
processes after each backward pass (an all-reduce, as DistributedDataParallel does), so every
process holds the same parameters. Evaluation is sharded the same way and gathered on rank 0,
the only process that writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaelab.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """This process's device, rank and the number of processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' (CUDA device ``local_rank`` if there is one, else CPU), 'cpu', 'cuda' or 'cuda:i'."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:<index> (got {name!r})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:<index> (got {name!r})")
    return device


def setup(device: str = "auto") -> Placement:
    """The placement of this process; joins torchrun's process group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    placement = Placement(resolve_device(device, local_rank), rank, world_size)
    if placement.distributed and not dist.is_initialized():
        if placement.device.type == "cuda":
            torch.cuda.set_device(placement.device)
        dist.init_process_group("nccl" if placement.device.type == "cuda" else "gloo")
    return placement


def teardown(placement: Placement) -> None:
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(parameters: list[torch.nn.Parameter], placement: Placement) -> None:
    """Replace each ``.grad`` by its mean over processes (one flattened all-reduce)."""
    if not placement.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= placement.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def gather(values: torch.Tensor, placement: Placement) -> torch.Tensor:
    """Concatenate every process's 1-D ``values`` (lengths may differ by one) in rank order."""
    if not placement.distributed:
        return values
    length = torch.tensor([values.numel()], device=values.device)
    lengths = [torch.zeros_like(length) for _ in range(placement.world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(lengths).item())
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    pieces = [torch.zeros_like(padded) for _ in range(placement.world_size)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[: int(n.item())] for piece, n in zip(pieces, lengths)])


def gather_objects(value, placement: Placement) -> list:
    """Every process's picklable ``value``, in rank order."""
    if not placement.distributed:
        return [value]
    values = [None] * placement.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(placement: Placement) -> None:
    if placement.distributed:
        dist.barrier()
