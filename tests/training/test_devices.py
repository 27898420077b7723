"""--gpu N: that GPU, made the process's current CUDA device, or one clear error."""
from __future__ import annotations

import torch

from fuxictr_mmctr.training.devices import resolve_device


def test_a_gpu_run_makes_its_gpu_the_current_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert resolve_device(1) == torch.device("cuda:1")
    assert current == [1]  # not left on GPU 0, where events and streams would go
