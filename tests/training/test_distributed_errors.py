"""An error on rank 0 while it computes a shared result, or while it prepares the shared files
the other ranks wait for, reaches every rank: no rank waits for a collective that never comes."""
from __future__ import annotations

import os
import socket
import time

import torch.multiprocessing as mp


def _start(rank, port):
    from fuxictr_mmctr.training import distributed

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    group, _ = distributed.start(-1, timeout_minutes=1.0)
    return group


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _failing_metrics_worker(rank, port, out_dir):
    from fuxictr_mmctr.training import distributed

    group = _start(rank, port)

    def metrics():
        raise ZeroDivisionError("no positive labels")  # not a UserError

    try:
        distributed.run_on_main(metrics)
        outcome = "returned"
    except Exception as error:  # noqa: BLE001 - the test records what each rank saw
        outcome = f"{type(error).__name__}: {error}"
    finally:
        distributed.stop(group)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(outcome)


def test_any_error_on_rank_0_reaches_every_rank(tmp_path):
    started = time.monotonic()
    mp.spawn(_failing_metrics_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    assert time.monotonic() - started < 50  # well inside the 1-minute collective timeout
    assert (tmp_path / "rank0.txt").read_text() == "ZeroDivisionError: no positive labels"
    assert (tmp_path / "rank1.txt").read_text() == (
        "RuntimeError: process 0 failed while computing a shared result "
        "(ZeroDivisionError: no positive labels)")


def _refused_lock_worker(rank, port, out_dir):
    from fuxictr_mmctr.errors import UserError
    from fuxictr_mmctr.training import distributed

    group = _start(rank, port)
    ran = []
    try:
        with distributed.main_first(group):  # rank 0 prepares, the others wait for it
            if group.is_main:
                raise UserError("expid X is already running (pid 7)")  # e.g. the run lock
            ran.append(rank)
        outcome = "went on"
    except Exception as error:  # noqa: BLE001 - the test records what each rank saw
        outcome = f"{type(error).__name__}: {error}"
    finally:
        distributed.stop(group)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(f"{outcome}; block ran: {bool(ran)}")


def test_an_error_on_rank_0_while_the_others_wait_for_it_reaches_them(tmp_path):
    started = time.monotonic()
    mp.spawn(_refused_lock_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    assert time.monotonic() - started < 50  # before, rank 1 waited out the 1-minute timeout
    expected = "UserError: expid X is already running (pid 7); block ran: False"
    assert (tmp_path / "rank0.txt").read_text() == expected
    assert (tmp_path / "rank1.txt").read_text() == expected
