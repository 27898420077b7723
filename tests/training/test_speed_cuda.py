"""The speed switches on a GPU (skipped without one; benchmarks/gpu_check.sh runs them)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data.batches import BatchLoader
from fuxictr_mmctr.data.loader import load_split
from fuxictr_mmctr.layers.packing import apply_packed_history
from tests.models.builders import make_batch, tiny_transformer_dcn
from tests.training.test_speed_switches import Batches, batches_of

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def to_gpu(batch):
    return {name: tensor.cuda() for name, tensor in batch.items()}


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_on_the_gpu(tmp_path, precision, dtype):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    model = tiny_transformer_dcn(tmp_path, gpu=0, precision=precision)
    seen = set()
    hook = model.sequence_arch.encoder.layers[0].linear1.register_forward_hook(
        lambda m, args, out: seen.add(out.dtype))
    try:
        model.fit(Batches([to_gpu(b) for b in batches_of([64] * 4)]), epochs=1)
    finally:
        hook.remove()
    assert seen == {dtype}
    assert model.trainer.scaler.is_enabled() == (precision == "fp16")
    scores = model.predict(Batches([to_gpu(b) for b in batches_of([32])]))
    assert np.isfinite(scores).all()


def test_fused_adam_and_tf32_on_the_gpu(tmp_path):
    model = tiny_transformer_dcn(tmp_path, gpu=0)
    assert model.trainer.optimizer.defaults.get("fused") is True
    assert torch.backends.cuda.matmul.allow_tf32
    off = tiny_transformer_dcn(tmp_path / "off", gpu=0, tf32=False, fused_optimizer=False)
    assert not off.trainer.optimizer.defaults.get("fused")
    assert not torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True


def test_compiled_training_on_the_gpu_matches_eager_and_reuses_its_graphs(tmp_path):
    torch._dynamo.reset()
    model = tiny_transformer_dcn(tmp_path / "c", gpu=0, compile=True, transformer_dropout=0.0,
                                 net_dropout=0.0, tf32=False)
    eager = tiny_transformer_dcn(tmp_path / "e", gpu=0, transformer_dropout=0.0,
                                 net_dropout=0.0, tf32=False)
    eager.load_state_dict(model.state_dict())
    assert model.trainer.compiling
    counters = torch._dynamo.utils.counters
    for sizes, seed in (([64, 23], 0), ([37, 50, 11], 5)):
        for batch in batches_of(sizes, seed=seed):
            batch = to_gpu(batch)
            model.train()
            model.trainer.compute_loss(batch).backward()
            got = model.trainer.predict(Batches([batch]))
            with torch.no_grad():
                expected = torch.sigmoid(eager.eval()(batch)["logit"].double()).reshape(-1)
            np.testing.assert_allclose(got, expected.cpu().numpy(), rtol=1e-4, atol=1e-5)
        if seed == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


def test_packed_equals_unpacked_on_the_gpu(tmp_path):
    model = tiny_transformer_dcn(tmp_path, gpu=0).eval()
    batch = to_gpu(make_batch(lengths=[0, 1, 10, 4, 9, 0, 10, 2]))
    with torch.no_grad():
        packed = model(batch)["logit"]
        apply_packed_history(model, False)
        unpacked = model(batch)["logit"]
    torch.testing.assert_close(packed, unpacked, rtol=1e-4, atol=1e-5)


def test_loader_options_on_the_gpu(tiny_dataset):
    split = load_split(os.path.join(tiny_dataset, "valid.parquet"))
    device = torch.device("cuda", 0)
    reference = list(BatchLoader(split, batch_size=128, device="cpu", trim_history=True))
    for options in ({}, {"pin_memory": True}, {"on_device": True}):
        loader = BatchLoader(split, batch_size=128, device=device, trim_history=True, **options)
        assert loader.pin_memory == (not options.get("on_device"))
        for got, expected in zip(loader, reference):
            assert all(tensor.is_cuda for tensor in got.values())
            for name, tensor in expected.items():
                assert torch.equal(got[name].cpu(), tensor)
