"""Several processes (torchrun): the process group an experiment runs in.

``torchrun --nproc_per_node N run_expid.py --expid ID [--gpu 0]`` starts N processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Each trains on its shard of the train rows
through DistributedDataParallel; evaluation gathers every rank's predictions (see
``models/base.py``). With ``--gpu -1`` the processes use the CPU and the gloo backend; with any
``--gpu >= 0`` process ``LOCAL_RANK`` uses GPU ``LOCAL_RANK`` and the nccl backend. Without
torchrun's variables (or with ``WORLD_SIZE=1``) nothing is initialised: one plain process.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fuxictr_mmctr.errors import UserError


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the experiment's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes files and prints the result."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def start(gpu: int) -> tuple[ProcessGroup, int]:
    """Join the process group torchrun describes; return it and the GPU index to use (-1: CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup(), gpu
    group = ProcessGroup(rank=int(os.environ["RANK"]), world_size=world_size,
                         local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    if gpu >= 0:
        if torch.cuda.device_count() <= group.local_rank:
            raise UserError(f"process {group.local_rank} of torchrun needs GPU {group.local_rank} "
                            f"but this machine has {torch.cuda.device_count()}; use fewer "
                            f"processes per node or --gpu -1")
        torch.cuda.set_device(group.local_rank)
        gpu = group.local_rank
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu >= 0 else "gloo")
    return group, gpu


def stop(group: ProcessGroup) -> None:
    """Leave the process group (a no-op for one plain process)."""
    if group.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(group: ProcessGroup):
    """Run the block on rank 0 first, then on the other ranks.

    For steps that create shared files (synthetic data, ``feature_map.json``, the array cache):
    rank 0 makes them, the others find them made.
    """
    if group.is_distributed and not group.is_main:
        dist.barrier()
    yield
    if group.is_distributed and group.is_main:
        dist.barrier()
