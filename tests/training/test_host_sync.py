"""No host sync in a training step or an evaluation forward, for every registered model, packed
and unpacked.

On a GPU a host read of a device tensor (``item()``, ``tolist()``, ``bool(tensor)``, a
``nonzero`` whose size the host must learn, ...) stalls the host until the device has caught
up: the next step cannot be queued and CUDA graphs are impossible. On the CPU there is no
device to wait for, so every such call is counted instead, through a torch function mode.
Exempt: ``torch.optim``'s reads of its own step counters (host tensors on a GPU too) and the
batch's host-side bucket sizes (``history_buckets``, which the loader never moves).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from fuxictr_mmctr.data.history_plan import BUCKETS_KEY
from fuxictr_mmctr.layers.packing import apply_packed_history
from fuxictr_mmctr.models.registry import registered_models
from fuxictr_mmctr.pipeline.experiment import build_model, load_params, make_loader, prepare

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
#: Tensor methods and torch functions that read a tensor on the host or need a size only the
#: device knows (a ``nonzero`` on a GPU copies its count back).
HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
              "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
              "bincount", "_local_scalar_dense"}
OPTIMIZER_CODE = os.path.join(os.path.dirname(torch.__file__), "optim")


class HostReads(TorchFunctionMode):
    """Records ``(function, caller)`` of every host read made inside its ``with`` block."""

    def __init__(self, host_tensors=()):
        super().__init__()
        self.reads = []
        self.host_tensors = [tensor for tensor in host_tensors if tensor is not None]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if self._is_host_read(name, args, kwargs):
            caller = sys._getframe(1)
            if not caller.f_code.co_filename.startswith(OPTIMIZER_CODE):
                where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
                self.reads.append((name, where))
        return func(*args, **kwargs)

    def _is_host_read(self, name, args, kwargs) -> bool:
        if args and any(args[0] is tensor for tensor in self.host_tensors):
            return False
        if name in HOST_READS:
            return True
        if name == "repeat_interleave":         # its output size, unless given
            return kwargs.get("output_size") is None and isinstance(
                args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor)
        if name in ("__getitem__", "__setitem__", "index_put", "index_put_"):
            indices = args[1] if len(args) > 1 else ()
            indices = indices if isinstance(indices, (tuple, list)) else (indices,)
            return any(isinstance(index, torch.Tensor) and index.dtype == torch.bool
                       for index in indices)   # a boolean mask index is a nonzero
        return False


def test_the_counter_sees_host_reads():
    values = torch.arange(4.0)
    with HostReads() as reads:
        values.sum().item()
        values[values > 1]
        if values[0]:
            pass
        torch.nonzero(values)
    assert [name for name, _ in reads.reads] == ["item", "__getitem__", "__bool__", "nonzero"]


def model_and_batches_of(name, dataset, folders, gpu=-1):
    """A tiny model of ``name`` (its ``_MicroLens_tiny`` expid on ``dataset``) and two batches
    of its own training loader (trimmed as training trims them)."""
    params = load_params(CONFIG_DIR, f"{name}_MicroLens_tiny")
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        params[key] = os.path.join(dataset, os.path.basename(params[key]))
    params["data_root"] = str(folders.mktemp("feature_maps"))
    params["model_root"] = str(folders.mktemp("checkpoints"))
    params.update(verbose=0, batch_size=32, gpu=gpu)
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    loader = make_loader(params, catalogue, params["train_data"], train=True,
                         device=model.device, trim_history=model.trims_history)
    batches = iter(loader)
    return model, [next(batches), next(batches)]


@pytest.fixture(scope="module", params=registered_models())
def model_and_batches(request, tiny_dataset, tmp_path_factory):
    return model_and_batches_of(request.param, tiny_dataset, tmp_path_factory)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_no_host_sync_in_a_training_step_or_an_evaluation_forward(model_and_batches, packed):
    model, (first, second) = model_and_batches
    apply_packed_history(model, packed)
    try:
        model.trainer.train_step(first)                  # warm-up (optimizer state)
        with HostReads([first.get(BUCKETS_KEY), second.get(BUCKETS_KEY)]) as training:
            model.trainer.train_step(second)
        model.eval()
        with torch.no_grad():
            model(first)                                 # the item table encoded once
            with HostReads([second.get(BUCKETS_KEY)]) as evaluation:
                model(second)
    finally:
        apply_packed_history(model, True)
    assert training.reads == []
    assert evaluation.reads == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", registered_models())
def test_no_device_sync_on_a_gpu(name, tiny_dataset, tmp_path_factory):
    """The same on a GPU, where CUDA itself reports every synchronising call."""
    model, (first, second) = model_and_batches_of(name, tiny_dataset, tmp_path_factory, gpu=0)
    model.trainer.train_step(first)
    model.eval()
    with torch.no_grad():
        model(first)
    model.train()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model.trainer.train_step(second)
        model.eval()
        with torch.no_grad():
            model(second)
    finally:
        torch.cuda.set_sync_debug_mode(0)
