"""CUDA placement and results (skipped without a GPU; run on a GPU machine with the same command)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.batches import BatchLoader
from fuxictr_mmctr.data.loader import load_split
from fuxictr_mmctr.training import speed
from tests.builders import inside, working_folder
from tests.models.builders import make_batch, predict, tiny_transformer_dcn

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = "Transformer_DCN_MicroLens_tiny"


def on_device(batch, device):
    return {name: tensor.to(device) for name, tensor in batch.items()}


def test_model_and_item_table_live_on_the_gpu(tmp_path):
    model = tiny_transformer_dcn(tmp_path, gpu=0)
    assert model.device.type == "cuda"
    assert all(p.is_cuda for p in model.parameters())
    assert all(b.is_cuda for b in model.item_encoder.item_table.buffers())


def test_gpu_forward_matches_cpu_forward(tmp_path):
    cpu_model = tiny_transformer_dcn(tmp_path / "cpu")
    gpu_model = tiny_transformer_dcn(tmp_path / "gpu", gpu=0)
    gpu_model.load_state_dict(cpu_model.state_dict())
    batch = make_batch()
    with speed.tf32(False):  # exactness in true float32 (as evaluation always runs)
        expected = predict(cpu_model, batch)
        got = predict(gpu_model, on_device(batch, gpu_model.device)).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_loader_batches_arrive_on_the_gpu(tiny_dataset):
    split = load_split(os.path.join(tiny_dataset, "valid.parquet"))
    loader = BatchLoader(split, batch_size=256, shuffle=False, device=torch.device("cuda:0"))
    batches = list(loader)
    assert all(tensor.is_cuda for batch in batches for tensor in batch.values())
    rows = sum(len(batch[contract.ITEM_ID]) for batch in batches)
    assert rows == loader.num_rows


def test_tiny_run_and_prediction_on_the_gpu(tmp_path, tiny_dataset):
    from fuxictr_mmctr.pipeline.experiment import run_experiment
    from fuxictr_mmctr.pipeline.prediction import run_prediction

    working_folder(tmp_path, tiny_dataset, ignore=["*_tuner"])
    with inside(tmp_path):
        result = run_experiment("./config/", TINY, gpu=0)
        scores_path = run_prediction("./config/", TINY, gpu=0,
                                     data="data/MicroLens_synth_tiny/valid.parquet",
                                     out="valid_scores.csv")
        scores = np.loadtxt(scores_path, delimiter=",", skiprows=1, usecols=1)
    assert result["valid"]["AUC"] > 0.68
    assert len(scores) == 1000 and np.isfinite(scores).all()
