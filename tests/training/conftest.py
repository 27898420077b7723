"""Fixtures shared by the training tests."""
from __future__ import annotations

import pytest
import torch

from fuxictr_mmctr.training import speed


@pytest.fixture
def counting_backend(monkeypatch):
    """A torch.compile backend that runs graphs eagerly and records each graph it is given;
    dynamo's recompile check is restored afterwards."""
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    monkeypatch.setattr(speed, "COMPILE_BACKEND", backend)
    # torch's own patch, not monkeypatch: dynamo's config is not a plain module attribute
    with torch._dynamo.config.patch(error_on_recompile=False):
        yield graphs
    torch._dynamo.reset()
