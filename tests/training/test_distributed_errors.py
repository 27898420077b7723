"""An error on rank 0 while it computes a shared result, or while it prepares the shared files
the other ranks wait for, reaches every rank: no rank waits for a collective that never comes."""
from __future__ import annotations

import os
import socket
import time

import torch.multiprocessing as mp


def _record_what_each_rank_saw(rank, port, out_dir, scenario):
    """Run ``scenario(group) -> str`` in a 2-process gloo group; write what this rank saw (the
    returned text, or the error it ended with) to ``out_dir/rank<r>.txt``."""
    from fuxictr_mmctr.training import distributed

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    group, _ = distributed.start(-1, timeout_minutes=1.0)
    try:
        outcome = scenario(group)
    except Exception as error:  # noqa: BLE001 - the test records what each rank saw
        outcome = f"{type(error).__name__}: {error}"
    finally:
        distributed.stop(group)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(outcome)


def _spawn_two_ranks(scenario, out_dir) -> float:
    """Seconds the two ranks took, both finished."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    mp.spawn(_record_what_each_rank_saw, args=(port, str(out_dir), scenario), nprocs=2)
    return time.monotonic() - started


def _failing_metrics(group):
    from fuxictr_mmctr.training import distributed

    def metrics():
        raise ZeroDivisionError("no positive labels")  # not a UserError

    distributed.run_on_main(metrics)
    return "returned"


def test_any_error_on_rank_0_reaches_every_rank(tmp_path):
    assert _spawn_two_ranks(_failing_metrics, tmp_path) < 50  # inside the 1-minute timeout
    assert (tmp_path / "rank0.txt").read_text() == "ZeroDivisionError: no positive labels"
    assert (tmp_path / "rank1.txt").read_text() == (
        "RuntimeError: process 0 failed while computing a shared result "
        "(ZeroDivisionError: no positive labels)")


def _refused_lock_on_rank_0(group):
    from fuxictr_mmctr.errors import UserError
    from fuxictr_mmctr.training import distributed

    with distributed.main_first(group):  # rank 0 prepares, the others wait for it
        if group.is_main:
            raise UserError("expid X is already running (pid 7)")  # e.g. the run lock
        return "the block ran"
    return "went on"


def test_an_error_on_rank_0_while_the_others_wait_for_it_reaches_them(tmp_path):
    # Before, rank 1 waited at a barrier for a rank 0 that had stopped.
    assert _spawn_two_ranks(_refused_lock_on_rank_0, tmp_path) < 50
    expected = "UserError: expid X is already running (pid 7)"
    assert (tmp_path / "rank0.txt").read_text() == expected
    assert (tmp_path / "rank1.txt").read_text() == expected
