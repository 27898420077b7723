"""Fixtures of the serving tests: one tiny trained run, exported once per format.

The run is ``Transformer_DCN_MicroLens_tiny`` trained for one epoch on the tiny synthetic data
in a working folder laid out like a user's clone (config/, data/, prediction.py). Its history
stays dynamic in the exported graph (1..max_len columns, as given); the contract test covers
the one model whose history is padded inside the graph (DIEN).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.builders import REPO, inside, working_folder

TINY = "Transformer_DCN_MicroLens_tiny"


def run_cli(args, cwd, timeout=600):
    """``python -m fuxictr_mmctr.cli ARGS`` in ``cwd``; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fuxictr_mmctr.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_script(script, args, cwd, timeout=600):
    """``python SCRIPT ARGS`` in ``cwd`` (the script's path may lie elsewhere)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def serving_workdir(tmp_path_factory, tiny_dataset):
    """A working folder where ``Transformer_DCN_MicroLens_tiny`` was trained for one epoch."""
    from fuxictr_mmctr.pipeline.experiment import run_experiment

    folder = working_folder(tmp_path_factory.mktemp("serving"), tiny_dataset,
                            scripts=["prediction.py"])
    with inside(folder):
        run_experiment("./config/", TINY, gpu=-1, overrides={"epochs": 1, "verbose": 0})
    return folder


@pytest.fixture(scope="session")
def pt2_export(serving_workdir):
    """``fuxictr-mmctr export --format pt2`` of the trained run, through the command line:
    ``(artifact folder, CompletedProcess)``."""
    out = serving_workdir / "artifacts" / "pt2"
    result = run_cli(["export", "--expid", TINY, "--format", "pt2", "--out", str(out)],
                     cwd=serving_workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture(scope="session")
def pt2_artifact(pt2_export):
    return pt2_export[0]


@pytest.fixture(scope="session")
def onnx_artifact(serving_workdir):
    """The same run exported to ONNX (in this process)."""
    from fuxictr_mmctr.serving.export import export_artifact

    out = serving_workdir / "artifacts" / "onnx"
    with inside(serving_workdir):
        export_artifact("./config/", TINY, str(out), fmt="onnx")
    return out


@pytest.fixture(scope="session")
def eager_valid_scores(serving_workdir):
    """``prediction.py --expid`` scores of the tiny valid split (the trained model, eager)."""
    import numpy as np

    from fuxictr_mmctr.pipeline.prediction import predict_scores

    with inside(serving_workdir):
        scores = predict_scores("./config/", TINY, -1,
                                os.path.join("data", "MicroLens_synth_tiny", "valid.parquet"))
    return np.asarray(scores)
