"""Hostile configurations: each is one clear line, exit 2, and nothing is written.

Every mutation is applied to a copy of the tiny expid in a fresh working folder without data: a
config error must be found before the synthetic data is generated, a log opened or a checkpoint
folder made.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import pytest
import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.experiment import run_experiment
from tests.builders import inside, working_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "Transformer_DCN_MicroLens_tiny"


@pytest.fixture
def workdir(tmp_path):
    return working_folder(tmp_path, scripts=["run_expid.py"])


def write_expid(workdir, base=TINY, **changes):
    """An expid ``Hostile``: the expid ``base`` with ``changes`` (None values delete the key)."""
    from fuxictr.utils import load_model_config

    params = load_model_config(str(workdir / "config"), base)
    params.pop("model_id")
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    (workdir / "config" / "model_config" / "Hostile.yaml").write_text(
        yaml.safe_dump({"Hostile": params}))


def assert_nothing_written(workdir):
    assert not (workdir / "data").exists()
    assert not (workdir / "checkpoints").exists()
    assert not (workdir / "config.csv").exists()


def run_in(workdir, expid="Hostile"):
    with inside(workdir):
        run_experiment("./config/", expid, gpu=-1)


MODEL_KEY_MUTATIONS = [
    ({"batch_sise": 128}, "unknown key 'batch_sise'; did you mean batch_size?"),
    ({"learning_rte": 1e-3}, "unknown key 'learning_rte'; did you mean learning_rate?"),
    ({"learning_rate": "fast"}, "learning_rate must be a number > 0, got 'fast'"),
    ({"learning_rate": -0.1}, "learning_rate must be a number > 0, got -0.1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": None}, "batch_size is required"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"epochs": None}, "epochs is required"),
    ({"epochs": 1.5}, "epochs must be an integer >= 1, got 1.5"),
    ({"net_dropout": 1.0}, "net_dropout must be a number in [0, 1), got 1.0"),
    ({"transformer_dropout": -0.1}, "transformer_dropout must be a number in [0, 1), got -0.1"),
    ({"dcn_hidden_units": 32}, "dcn_hidden_units must be a list, got 32"),
    ({"dcn_hidden_units": [32, 0]}, "dcn_hidden_units must be a list of positive integers"),
    ({"use_dcn": "no"}, "use_dcn must be True or False, got 'no'"),
    ({"shuffle": "yes"}, "shuffle must be True or False, got 'yes'"),
    ({"optimizer": "adamm"}, "optimizer 'adamm' is not a torch.optim optimizer"),
    ({"loss": "mse"}, "loss must be one of binary_crossentropy"),
    ({"metrics": ["AUCC"]}, "metrics must be a list of AUC, gAUC, logloss, got ['AUCC']"),
    ({"monitor": "AUCC"}, "monitor must be built from AUC, gAUC, logloss, got 'AUCC'"),
    ({"monitor": {"AUC": "one"}}, "monitor must be a metric name or {metric: weight}"),
    ({"monitor_mode": "maximum"}, "monitor_mode must be max or min, got 'maximum'"),
    ({"seed": "abc"}, "seed must be an integer, got 'abc'"),
    ({"embedding_regularizer": "lots"}, "embedding_regularizer must be a number >= 0 or l1(x)"),
    ({"max_len": 0}, "max_len must be an integer >= 1 or null, got 0"),
    ({"early_stop_patience": 0}, "early_stop_patience must be an integer >= 1, got 0"),
    ({"eval_steps": -5}, "eval_steps must be an integer >= 1 or null, got -5"),
    ({"feature_specs": [{"name": "item_emb_d256", "projection": "linear"}]},
     "feature_specs: {'name': 'item_emb_d256', 'projection': 'linear'} does not name a feature"),
    ({"feature_specs": [{"name": "item_emb_d128", "projection": "bogus"}]},
     "feature_specs, feature item_emb_d128: projection must be one of none, linear, mlp, got "
     "'bogus'"),
    ({"feature_specs": [{"name": "item_emb_d128", "embedding_dim": 0}]},
     "feature_specs, feature item_emb_d128: embedding_dim must be an integer >= 1, got 0"),
    ({"dcn_low_rank": 0}, "dcn_low_rank must be an integer >= 1 or null, got 0"),
    ({"transformer_layers": 0}, "transformer_layers must be an integer >= 1, got 0"),
    ({"hidden_activations": "Rectifier"}, "hidden_activations must be a torch activation name"),
    ({"task": "regression"}, "task must be binary_classification, got 'regression'"),
    ({"use_features": ["item_id"]}, "use_features is not supported"),
    ({"model": "Transformer_DCNN"}, "unknown model 'Transformer_DCNN'"),
    ({"dataset_id": "NoSuchData"}, "dataset_id NoSuchData of expid Hostile not found"),
]


@pytest.mark.parametrize("changes, message", MODEL_KEY_MUTATIONS,
                         ids=[next(iter(c)) + "-" + str(i)
                              for i, (c, _) in enumerate(MODEL_KEY_MUTATIONS)])
def test_a_bad_model_key_is_one_line_before_anything_is_written(workdir, changes, message):
    write_expid(workdir, **changes)
    with pytest.raises(UserError) as error:
        run_in(workdir)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert_nothing_written(workdir)


OTHER_MODEL_MUTATIONS = [
    ("DIEN_MicroLens_tiny", {"interest_dim": -4},
     "interest_dim must be an integer >= 1 or null, got -4"),
    ("QIN_MicroLens_tiny", {"num_row": 0}, "num_row must be an integer >= 1, got 0"),
    ("BST_MicroLens_tiny", {"ffn_activation": "swish"},
     "ffn_activation must be one of relu, gelu, leaky_relu, got 'swish'"),
    ("DCNv2_MicroLens_tiny", {"model_structure": "stacked"},
     "model_structure must be one of parallel, got 'stacked'"),
    ("DIN_MicroLens_tiny", {"attention_hidden_units": [64, -1]},
     "attention_hidden_units must be a list of positive integers, got [64, -1]"),
]


@pytest.mark.parametrize("base, changes, message", OTHER_MODEL_MUTATIONS,
                         ids=[next(iter(c)) for _, c, _ in OTHER_MODEL_MUTATIONS])
def test_a_bad_build_argument_of_any_model_is_one_line_naming_the_key(workdir, base, changes,
                                                                       message):
    write_expid(workdir, base=base, **changes)
    with pytest.raises(UserError) as error:
        run_in(workdir)
    assert str(error.value) == f"expid Hostile: {message}"
    assert_nothing_written(workdir)


def test_the_build_argument_rules_cover_a_new_model_without_new_code():
    from fuxictr_mmctr.pipeline.build_arguments import argument_problem

    class NewModel:
        def build(self, block_count=2, gate_dim=None, keep_prob=0.5, tower_units=(),
                  mode: Literal["fast", "exact"] = "fast", head_activation="ReLU",
                  use_gate=True, alpha=1.0):
            pass

    refused = {"block_count": 0, "gate_dim": -4, "keep_prob": 1.0, "tower_units": [8, 0],
               "mode": "slow", "head_activation": "relu6x", "use_gate": "yes", "alpha": "a"}
    accepted = {"block_count": 1, "gate_dim": None, "keep_prob": 0.0, "tower_units": [8],
                "mode": "exact", "head_activation": "Tanh", "use_gate": False, "alpha": 0}
    for name, value in refused.items():
        problem = argument_problem(NewModel, name, value)
        assert problem is not None and problem.startswith(f"{name} must be "), (name, problem)
        assert problem.endswith(f"got {value!r}"), problem
    for name, value in accepted.items():
        assert argument_problem(NewModel, name, value) is None, name
    assert argument_problem(NewModel, "not_an_argument", 0) is None


DATASET_MUTATIONS = [
    ({"feature_cols": "all"}, "feature_cols must be a list of feature mappings"),
    ({"feature_cols": [{"name": "item_id", "type": "categorial"}]},
     "feature_cols[0] (item_id): type must be one of meta, categorical"),
    ({"label_col": None}, "label_col must be a mapping with a name, got None"),
    ({"validation": "maybe"}, "validation"),
    ({"synthetic_preset": "huge"}, "synthetic_preset must be one of demo, full, tiny"),
    ({"train_data": None}, "train_data must be a path"),
    ({"data_format": "csv"}, "data_format: 'csv' is not supported"),
    ({"item_info": "./data/MicroLens_synth_tiny/item_inf.parquet"},
     "dataset MicroLens_synth_tiny: item_info ./data/MicroLens_synth_tiny/item_inf.parquet not "
     "found, and the synthetic preset tiny does not make it"),
]


@pytest.mark.parametrize("changes, message", DATASET_MUTATIONS,
                         ids=[next(iter(c)) for c, _ in DATASET_MUTATIONS])
def test_a_bad_dataset_key_is_one_line_before_anything_is_written(workdir, changes, message):
    path = workdir / "config" / "dataset_config.yaml"
    datasets = yaml.safe_load(path.read_text())
    dataset = dict(datasets["MicroLens_synth_tiny"])
    for key, value in changes.items():
        if value is None:
            dataset.pop(key, None)
        else:
            dataset[key] = value
    datasets["MicroLens_synth_tiny"] = dataset
    path.write_text(yaml.safe_dump(datasets))
    with pytest.raises(UserError) as error:
        run_in(workdir, TINY)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert_nothing_written(workdir)


def test_malformed_yaml_names_the_file_and_line(workdir):
    broken = workdir / "config" / "model_config" / "Broken.yaml"
    broken.write_text("Broken:\n    model: Transformer_DCN\n    batch_size: [1, 2\n")
    with pytest.raises(UserError, match=r"Broken.yaml, line 4: not valid YAML"):
        run_in(workdir, TINY)
    assert_nothing_written(workdir)


def test_an_expid_that_is_not_a_mapping_is_named(workdir):
    (workdir / "config" / "model_config" / "Hostile.yaml").write_text("Hostile: 5\n")
    with pytest.raises(UserError, match="Hostile.yaml: Hostile must be a mapping of keys to "
                                        "values, found a int"):
        run_in(workdir)
    assert_nothing_written(workdir)


def test_the_user_sees_one_error_line_and_exit_status_2(workdir):
    write_expid(workdir, batch_sise=128)
    result = subprocess.run([sys.executable, "run_expid.py", "--expid", "Hostile"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: expid Hostile: unknown key 'batch_sise'; did you mean batch_size?"]
    assert_nothing_written(workdir)


def test_numbers_yaml_reads_as_strings_are_taken_as_numbers(workdir):
    from fuxictr_mmctr.pipeline.experiment import load_params

    write_expid(workdir, learning_rate="1e-3", embedding_regularizer=1)
    params = load_params(str(workdir / "config"), "Hostile")
    assert params["learning_rate"] == 1e-3
    # FuxiCTR silently ignores an int regulariser: it becomes the float it means.
    assert params["embedding_regularizer"] == 1.0 and isinstance(
        params["embedding_regularizer"], float)


def test_every_expid_of_the_repository_passes_the_check():
    from fuxictr_mmctr.pipeline.config_check import check_params, load_params, read_yaml

    config_dir = os.path.join(REPO, "config")
    expids = [name for path in sorted(os.listdir(os.path.join(config_dir, "model_config")))
              for name in read_yaml(os.path.join(config_dir, "model_config", path))
              if name != "Base"]
    assert len(expids) >= 4
    for expid in expids:
        check_params(load_params(config_dir, expid), where=expid)
