"""Everything distributed in one place: the process group and the collectives training uses.

``torchrun --nproc_per_node N run_expid.py --expid ID [--gpu 0]`` starts N processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`start` joins them: with ``--gpu -1`` the
processes use the CPU and gloo, with ``--gpu >= 0`` process ``LOCAL_RANK`` uses GPU
``LOCAL_RANK`` and nccl. Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing is
initialised and every helper below is a no-op, so the trainer calls them unconditionally.
``FUXICTR_MMCTR_FORCE_DDP=1`` under torchrun makes one process (``--nproc_per_node 1``) take
the distributed path anyway: process group (nccl or gloo), DDP and every collective, so the
distributed code can be checked on one GPU (``benchmarks/gpu_check.sh``).

Rules the trainer follows with these helpers:

* every rank trains on its own shard; predictions are gathered to every rank in row order
  (:func:`gather_in_row_order`) and metrics are computed on rank 0 only
  (:func:`run_on_main`), then broadcast, so all ranks take the same early-stop decision;
* an error on rank 0 while computing metrics reaches every rank (no rank waits forever);
* only rank 0 writes checkpoints, logs and results (:func:`is_main`).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from fuxictr_mmctr.errors import UserError, first_line

#: Set to ``1`` under torchrun: take the distributed path also at world size 1.
FORCE_DDP_VARIABLE = "FUXICTR_MMCTR_FORCE_DDP"
#: Minutes a process waits for the others at a collective before the job stops (gloo's own
#: default is 30): a stopped or stuck process ends the job instead of hanging it.
DEFAULT_TIMEOUT_MINUTES = 10.0


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the experiment's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: One process on the distributed path (:data:`FORCE_DDP_VARIABLE`).
    forced: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes files and prints the result."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or self.forced


def ddp_forced() -> bool:
    """Whether :data:`FORCE_DDP_VARIABLE` asks for the distributed path at world size 1."""
    return os.environ.get(FORCE_DDP_VARIABLE, "") == "1"


def start(gpu: int, timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
          ) -> tuple[ProcessGroup, int]:
    """Join the process group torchrun describes; return it and the GPU index to use (-1: CPU).

    Collectives give up after ``timeout_minutes`` (see :func:`explain_timeouts`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    forced = ddp_forced()
    if world_size <= 1 and not forced:
        return ProcessGroup(), gpu
    if forced and not ("RANK" in os.environ and "MASTER_ADDR" in os.environ):
        raise UserError(f"{FORCE_DDP_VARIABLE}=1 needs torchrun (RANK and MASTER_ADDR are "
                        f"unset): torchrun --nproc_per_node 1 run_expid.py ...")
    group = ProcessGroup(rank=int(os.environ["RANK"]), world_size=world_size,
                         local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
                         forced=forced)
    if gpu >= 0:
        if torch.cuda.device_count() <= group.local_rank:
            raise UserError(f"process {group.local_rank} of torchrun needs GPU {group.local_rank} "
                            f"but this machine has {torch.cuda.device_count()}; use fewer "
                            f"processes per node or --gpu -1")
        torch.cuda.set_device(group.local_rank)
        gpu = group.local_rank
    if float(timeout_minutes) <= 0:
        raise UserError(f"the distributed timeout must be > 0 minutes, got {timeout_minutes}")
    if not dist.is_initialized():
        options = {"timeout": timedelta(minutes=float(timeout_minutes))}
        if gpu >= 0:  # binds the NCCL communicator to this process's GPU from the start
            options["device_id"] = torch.device("cuda", gpu)
        dist.init_process_group("nccl" if gpu >= 0 else "gloo", **options)
    return group, gpu


def stop(group: ProcessGroup) -> None:
    """Leave the process group (a no-op for one plain process)."""
    if group.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def explain_timeouts(group: ProcessGroup, timeout_minutes: float):
    """Turn a collective that timed out or lost its peers into one line naming this rank.

    A process that is stopped (not dead) leaves the others waiting at their next collective;
    after the timeout they fail, so the launcher ends the whole job with a non-zero status.
    """
    if not group.is_distributed:
        yield
        return
    try:
        yield
    except RuntimeError as error:  # DistBackendError and gloo/nccl timeouts are RuntimeErrors
        text = str(error)
        lost = ("timed out" in text.lower() or "timeout" in text.lower()
                or "connection" in text.lower() or "closed" in text.lower())
        if not lost:
            raise
        raise UserError(f"process {group.rank} of {group.world_size}: no answer from the other "
                        f"processes within {timeout_minutes:g} min (one of them is stuck or "
                        f"died); stopping") from None


@contextlib.contextmanager
def main_first(group: ProcessGroup):
    """Run the block on rank 0 first, then on the other ranks.

    For steps that create shared files (synthetic data, ``feature_map.json``, the array cache):
    rank 0 makes them, the others find them made. An error in rank 0's block reaches every rank
    as in :func:`run_on_main` (the same :class:`UserError`, or a ``RuntimeError`` naming it), and
    the others skip the block: no rank waits for a rank 0 that has stopped.
    """
    if not group.is_distributed:
        yield
        return
    if group.is_main:
        try:
            yield
        except Exception as error:
            broadcast_object(_failure(error))
            raise
        broadcast_object(("ok", None))
        return
    _raise_failure(*broadcast_object(None), doing="preparing the shared files")
    yield


# ---------------------------------------------------------------------- collectives
def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group (or the one
    process of a group forced with :data:`FORCE_DDP_VARIABLE`)."""
    return (dist.is_available() and dist.is_initialized()
            and (dist.get_world_size() > 1 or ddp_forced()))


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def run_on_main(function):
    """``function()`` computed on rank 0 and broadcast. Any error there reaches every rank (the
    other ranks would otherwise wait for a broadcast that never comes): a :class:`UserError` is
    raised as itself everywhere; another error is re-raised on rank 0 and raised on the other
    ranks as a ``RuntimeError`` naming it."""
    outcome = error_on_main = None
    if is_main():
        try:
            outcome = ("ok", function())
        except UserError as error:
            outcome = _failure(error)
        except Exception as error:  # noqa: BLE001 - told to every rank, then re-raised
            error_on_main = error
            outcome = _failure(error)
    status, value = broadcast_object(outcome)
    if error_on_main is not None:
        raise error_on_main
    _raise_failure(status, value, doing="computing a shared result")
    return value


def _failure(error: Exception) -> tuple:
    """What rank 0 tells the others of its error: ``("user_error", message)`` or ``("error",
    "Type: first line")``."""
    if isinstance(error, UserError):
        return "user_error", str(error)
    return "error", f"{type(error).__name__}: {first_line(error)}"


def _raise_failure(status: str, value, doing: str) -> None:
    """On a rank other than 0: raise what rank 0 told (:func:`_failure`); nothing for ``ok``."""
    if status == "user_error":
        raise UserError(value)
    if status == "error":
        raise RuntimeError(f"process 0 failed while {doing} ({value})")


def per_rank_seed(seed: int) -> int:
    """A seed of this rank's own: ranks must not draw the same dropout masks."""
    return int(seed) + rank()


def gather_in_row_order(values: torch.Tensor, data_generator) -> torch.Tensor:
    """All ranks' ``values (n_r,)`` concatenated and put in row order: ``(N,)``.

    Each rank's loader says which rows it yielded (``row_indices()``); shards have different
    lengths (possibly 0), so values are padded to the longest before ``all_gather``. Every rank
    must pass the same dtype, also for an empty shard.
    """
    if not is_distributed():
        return values
    if not hasattr(data_generator, "row_indices"):
        raise UserError("distributed evaluation needs a loader with row_indices()")
    rows = torch.as_tensor(np.asarray(data_generator.row_indices()), dtype=torch.int64,
                           device=values.device)
    world = dist.get_world_size()
    count = torch.tensor([len(values)], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_values = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded_values[:len(values)] = values
    padded_rows = torch.zeros(longest, dtype=torch.int64, device=values.device)
    padded_rows[:len(rows)] = rows
    all_values = [torch.empty_like(padded_values) for _ in range(world)]
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    dist.all_gather(all_values, padded_values)
    dist.all_gather(all_rows, padded_rows)
    keep = [slice(0, int(c.item())) for c in counts]
    merged_values = torch.cat([v[k] for v, k in zip(all_values, keep)])
    merged_rows = torch.cat([r[k] for r, k in zip(all_rows, keep)])
    return merged_values[torch.argsort(merged_rows)]


def wrap_model(model: torch.nn.Module, device: torch.device, **ddp_kwargs):
    """``model`` in ``DistributedDataParallel`` (process group already initialised).

    Non-persistent buffers (the item table, constant masks) are identical on every rank by
    construction: DDP is told to ignore them, so they are not broadcast before each forward
    (the MicroLens item table alone is ~51 MB).
    """
    constant_buffers = [
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        for name in getattr(module, "_non_persistent_buffers_set", ())]
    ddp = torch.nn.parallel.DistributedDataParallel
    ddp._set_params_and_buffers_to_ignore_for_model(model, constant_buffers)
    device_ids = [device.index] if device.type == "cuda" else None
    return ddp(model, device_ids=device_ids, **ddp_kwargs)
