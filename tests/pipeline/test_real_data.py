"""The real-users path: a release made into a dataset by ``microlens`` trains with the
MicroLens50k expids, unchanged, and reports a test AUC from its truth file."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fuxictr_mmctr.data.microlens import FramingOptions, build_microlens
from fuxictr_mmctr.models.registry import registered_models
from fuxictr_mmctr.pipeline import experiment
from tests.builders import inside, working_folder
from tests.data.test_microlens import write_release

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")


def test_every_model_has_a_real_data_expid_sized_for_evaluation():
    for model in registered_models():
        params = experiment.load_params(CONFIG_DIR, f"{model}_MicroLens50k")
        assert params["model"] == model
        assert params["dataset_id"] == "MicroLens50k"
        assert params["eval_batch_size"] >= 4096  # 160k valid rows: not in batches of 1024
        assert params["max_len"] == 50 and params["monitor"] == "AUC"


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """A clone-like working folder whose ``data/MicroLens50k`` comes from a small release."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(3)
    weights = 1.0 / np.arange(1, 81)
    sequences = {user: (1000 + rng.choice(80, int(rng.integers(5, 12)), replace=False,
                                          p=weights / weights.sum())).tolist()
                 for user in range(1, 161)}
    words = ["cat", "dog", "food", "song", "game", "dance", "city", "car"]
    titles = {1000 + k: f"{words[k % 8]} {words[(k * 3) % 8]} video # {words[k % 5]}"
              for k in range(80)}
    pairs, titles_path = write_release(str(root / "release"), sequences=sequences, titles=titles)
    working_folder(str(root))
    build_microlens(pairs, titles_path, str(root / "data" / "MicroLens50k"),
                    FramingOptions(dim=8), say=lambda *args: None)
    return str(root)


@pytest.mark.parametrize("expid", ["DIN_MicroLens50k_item_levels_user", "DeepFM_MicroLens50k"])
def test_a_real_data_expid_trains_and_reports_its_test_auc(real_folder, expid):
    overrides = {"epochs": 1, "eval_steps": None, "batch_size": 256}
    with inside(real_folder):
        result = experiment.run_experiment("config", expid, overrides=overrides)
    assert 0.0 < result["valid"]["AUC"] < 1.0
    assert result["test_auc_truth"] is not None and 0.0 < result["test_auc_truth"] < 1.0
    assert result["oracle_auc"] is None  # real data has no oracle
