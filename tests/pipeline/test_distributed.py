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
