"""Data-parallel training through PyTorch's own machinery: torch.distributed.run starts the
processes and sets RANK / WORLD_SIZE / LOCAL_RANK; we join the process group (NCCL on CUDA,
gloo on CPU) and wrap the model in DistributedDataParallel. No home-made gradient exchange.

Decisions that end the loop (a stop request, a non-finite loss) are all-reduced every step so
every rank leaves the loop at the same step and no rank waits in a collective for a peer that
has gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> DistContext:
        return cls(world_size=int(os.environ.get("WORLD_SIZE", "1")),
                   rank=int(os.environ.get("RANK", "0")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device_type: str, timeout_s: float) -> None:
        import torch.distributed as dist

        if not self.enabled or dist.is_initialized():
            return
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))

    def shutdown(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def any(self, flags: list[bool], device) -> list[bool]:
        """Element-wise OR across ranks."""
        if not self.enabled:
            return flags
        import torch.distributed as dist

        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def mean(self, value: float, device) -> float:
        if not self.enabled:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], device=device, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


def cpu_threads_per_process(local_world_size: int) -> int:
    """Share the cores: N processes on one machine with all threads each oversubscribe it."""
    return max(1, (os.cpu_count() or 1) // max(1, local_world_size))
