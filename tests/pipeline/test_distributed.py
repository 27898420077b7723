"""The process group read from torchrun's environment."""
import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import distributed


def test_without_torchrun_one_plain_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group, gpu = distributed.start(3)
    assert group == distributed.ProcessGroup() and group.is_main and not group.is_distributed
    assert gpu == 3
    with distributed.main_first(group):  # no barrier for one process
        pass
    distributed.stop(group)


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="the machine has the GPUs asked for")
def test_more_gpu_processes_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match="needs GPU 1 but this machine has"):
        distributed.start(0)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_forced_ddp_runs_the_distributed_path_in_one_process(monkeypatch):
    """FUXICTR_MMCTR_FORCE_DDP=1 under torchrun's variables at world size 1: a real (gloo)
    process group, DDP and the collectives, as ``benchmarks/gpu_check.sh`` runs with nccl."""
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                        distributed.FORCE_DDP_VARIABLE: "1"}.items():
        monkeypatch.setenv(name, value)
    group, gpu = distributed.start(-1, timeout_minutes=1)
    try:
        assert gpu == -1 and group.is_distributed and group.is_main
        assert torch.distributed.get_backend() == "gloo" and distributed.is_distributed()
        model = distributed.wrap_model(torch.nn.Linear(3, 1), torch.device("cpu"))
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        model(torch.ones(2, 3)).sum().backward()  # DDP's gradient all-reduce at world size 1
        assert distributed.all_reduce_sum(torch.tensor([2.0])).item() == 2.0
        assert distributed.run_on_main(lambda: "rank 0's") == "rank 0's"
    finally:
        distributed.stop(group)
    assert not torch.distributed.is_initialized()


def test_forced_ddp_outside_torchrun_is_one_line(monkeypatch):
    for name in ("RANK", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(distributed.FORCE_DDP_VARIABLE, "1")
    with pytest.raises(UserError, match="FUXICTR_MMCTR_FORCE_DDP=1 needs torchrun"):
        distributed.start(-1)
