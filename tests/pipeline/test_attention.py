"""fuxictr-mmctr attention: the weights of a trained model, their CSV/PNG, the session share."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer
from fuxictr_mmctr.pipeline.attention import (
    AttentionRecorder,
    inspect_attention,
    received_attention,
    session_shares,
)
from fuxictr_mmctr.pipeline.experiment import run_experiment
from tests.builders import inside, working_folder

EXPID = "Transformer_DCN_MicroLens_tiny"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    folder = working_folder(tmp_path_factory.mktemp("attention"), tiny_dataset)
    with inside(folder):
        run_experiment("config", EXPID)
        summary = inspect_attention("config", EXPID, rows=12, out_dir="inspected")
    return folder, summary


def test_writes_csv_png_and_summary(trained):
    folder, summary = trained
    base = os.path.join(folder, "inspected", f"{EXPID}_attention")
    with open(base + ".png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(base + ".csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(row["row"]) for row in rows} == set(range(12))
    assert json.load(open(base + ".json", encoding="utf-8"))["rows"] == 12
    per_row = {}
    for row in rows:
        if row["real"] == "1":
            per_row[row["row"]] = per_row.get(row["row"], 0.0) + float(row["attention"])
        else:  # padding gets no attention under the correct mask
            assert float(row["attention"]) == 0.0 and row["item_id"] == "0"
    assert np.allclose(list(per_row.values()), 1.0, atol=1e-5)
    assert all(row["session_planted"] in ("0", "1") for row in rows)
    assert all(row["session_planted"] == "0" for row in rows if row["real"] == "0")


def test_session_share_is_a_share(trained):
    _, summary = trained
    layer = summary["layers"][0]
    assert 0.0 <= layer["session_share"] <= 1.0
    assert 0.0 < layer["uniform_share"] <= 1.0
    assert layer["attention_on_history"] == pytest.approx(1.0, abs=1e-5)


def test_command_line_prints_the_share(trained):
    folder, _ = trained
    result = subprocess.run([sys.executable, "-m", "fuxictr_mmctr.cli", "attention", "--expid",
                             EXPID, "--rows", "5", "--out", "cli_out"], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "on the planted session items" in result.stdout
    assert os.path.exists(os.path.join(folder, "cli_out", f"{EXPID}_attention.csv"))


def test_models_without_attention_and_untrained_expids_are_errors(trained):
    folder, _ = trained
    with inside(folder):
        with pytest.raises(UserError, match="no transformer attention"):
            inspect_attention("config", "DCNv2_MicroLens_tiny", rows=3, out_dir="x")
        with pytest.raises(UserError, match="train it first"):
            inspect_attention("config", "BST_MicroLens_tiny", rows=3, out_dir="x")
        with pytest.raises(UserError, match="at least 1"):
            inspect_attention("config", EXPID, rows=0, out_dir="x")
    assert not os.path.exists(os.path.join(folder, "x"))


def test_recorded_weights_ignore_padding_keys():
    torch.manual_seed(0)
    arch = TargetAwareTransformer(item_dim=4, num_layers=2, num_heads=2, dim_feedforward=8,
                                  dropout=0.0, first_k_cols=2).eval()
    arch.packed = False
    history_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    with AttentionRecorder(arch) as recorder, torch.no_grad():
        arch(torch.randn(2, 4), torch.randn(2, 4, 4), history_mask)
    assert len(recorder.weights) == 2
    for weights in recorder.weights:
        assert weights.shape == (2, 4, 4)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 4), atol=1e-6)
        assert torch.all(weights[0, :, :2] == 0)          # padding keys of row 0


def test_received_attention_and_shares():
    weights = torch.zeros(1, 3, 3)
    weights[0, :, 2] = 1.0                                  # every query looks at position 2
    real = torch.tensor([[False, True, True]])
    received = received_attention(weights, real)
    assert torch.allclose(received, torch.tensor([[0.0, 0.0, 1.0]]))
    planted = np.array([[False, False, True]])
    shares = session_shares(received.numpy(), real.numpy(), planted)
    assert shares["session_share"] == pytest.approx(1.0)
    assert shares["uniform_share"] == pytest.approx(0.5)
    shares = session_shares(received.numpy(), real.numpy(), np.array([[False, True, False]]))
    assert shares["session_share"] == pytest.approx(0.0)
    assert "session_share" not in session_shares(received.numpy(), real.numpy(), None)


def test_seed_reads_a_comparison_runs_checkpoint(trained):
    folder, _ = trained
    with inside(folder):
        with pytest.raises(UserError, match=f"{EXPID}_seed7.model.*compare_models"):
            inspect_attention("config", EXPID, rows=3, out_dir="x", seed=7)
        checkpoint = os.path.join("checkpoints", "MicroLens_synth_tiny", f"{EXPID}.model")
        import shutil
        shutil.copy(checkpoint, checkpoint.replace(".model", "_seed7.model"))
        summary = inspect_attention("config", EXPID, rows=3, out_dir="seeded", seed=7)
    # Relative to the working folder, so a committed summary names no machine's paths.
    assert summary["checkpoint"] == os.path.join("checkpoints", "MicroLens_synth_tiny",
                                                 f"{EXPID}_seed7.model")
    assert os.path.exists(os.path.join(folder, "seeded", f"{EXPID}_seed7_attention.png"))
