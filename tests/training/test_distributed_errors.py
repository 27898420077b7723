"""An error on rank 0 while it computes a shared result reaches every rank: no rank waits for a
broadcast that never comes."""
from __future__ import annotations

import os
import socket
import time

import torch.multiprocessing as mp


def _failing_metrics_worker(rank, port, out_dir):
    from fuxictr_mmctr.training import distributed

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    group, _ = distributed.start(-1, timeout_minutes=1.0)

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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    mp.spawn(_failing_metrics_worker, args=(port, str(tmp_path)), nprocs=2)
    assert time.monotonic() - started < 50  # well inside the 1-minute collective timeout
    assert (tmp_path / "rank0.txt").read_text() == "ZeroDivisionError: no positive labels"
    assert (tmp_path / "rank1.txt").read_text() == (
        "RuntimeError: process 0 failed while computing a shared result "
        "(ZeroDivisionError: no positive labels)")
