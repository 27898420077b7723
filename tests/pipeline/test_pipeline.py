"""End to end: run_expid, prediction and the tuner on the tiny synthetic data."""
import csv
import io
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from fuxictr_mmctr.data.scoring import score_submission
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.models.registry import registered_models

from fuxictr_mmctr.pipeline.experiment import run_experiment
from fuxictr_mmctr.pipeline.prediction import _format_rows, run_prediction
from fuxictr_mmctr.pipeline.tuner import expand_tuner_config
from tests.builders import inside, working_folder

TINY = "Transformer_DCN_MicroLens_tiny"
# The tiny data's oracle AUC is ~0.82; three quick epochs of the scaled-down model reach ~0.73.
TINY_MIN_AUC = 0.68
#: Any model that learns something on the tiny data (DeepFM, which reads no history, included).
TINY_LEARNS_AUC = 0.6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_dataset):
    """A working folder with the repository's config and the tiny data in ./data/."""
    return working_folder(tmp_path_factory.mktemp("pipeline"), tiny_dataset,
                          scripts=["run_expid.py", "prediction.py", "run_param_tuner.py"],
                          ignore=["*_tuner"])


@pytest.fixture(scope="module")
def trained(workdir):
    with inside(workdir):
        yield run_experiment("./config/", TINY, gpu=-1)


def test_tiny_run_learns_and_reports(trained, workdir):
    assert trained["valid"]["AUC"] > TINY_MIN_AUC
    # Synthetic data: the test AUC against truth.parquet is reported next to the valid AUC.
    assert trained["test"] is None  # the test split has no label column, as in the challenge
    assert trained["test_auc_truth"] > TINY_MIN_AUC - 0.05
    assert trained["valid"]["AUC"] < trained["oracle_auc"] + 0.02
    assert os.path.exists(workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.model")
    rows = (workdir / "config.csv").read_text().strip().splitlines()
    assert f"[exp_id] {TINY}" in rows[-1] and "AUC: " in rows[-1]


def test_submission_has_one_row_per_test_row_in_order(trained, workdir):
    with inside(workdir):
        out = run_prediction("./config/", TINY, gpu=-1)
    with zipfile.ZipFile(workdir / out) as archive:
        assert archive.namelist() == ["prediction.csv"]
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("prediction.csv"))))
    num_test = pq.read_metadata(workdir / "data" / "MicroLens_synth_tiny" / "test.parquet").num_rows
    assert len(rows) == num_test
    assert [int(row["ID"]) for row in rows] == list(range(num_test))
    scores = [float(row["Task2"]) for row in rows]
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 10
    # The submission scores exactly as the run's own test AUC against the synthetic truth.
    truth = workdir / "data" / "MicroLens_synth_tiny"
    assert score_submission(str(workdir / out), str(truth)) == pytest.approx(
        trained["test_auc_truth"], abs=1e-12)


def test_scores_keep_every_digit_that_tells_them_apart():
    scores = np.array([1 - 1e-12, 1 - 2e-12, 0.5, 3e-15, 1e-15])
    text = _format_rows(np.arange(len(scores)), scores, "Task2")
    read_back = [float(line.split(",")[1]) for line in text.splitlines()[1:]]
    assert read_back == scores.tolist()
    assert len(set(read_back)) == len(scores)


def test_prediction_on_a_parquet_anywhere_uses_the_trained_schema(trained, workdir, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # no schema.json here: the data is not MicroLens-sized
    elsewhere.mkdir()
    shutil.copy(workdir / "data" / "MicroLens_synth_tiny" / "valid.parquet", elsewhere / "x.parquet")
    out = tmp_path / "scores.csv"
    result = subprocess.run(
        [sys.executable, "prediction.py", "--expid", TINY, "--data", str(elsewhere / "x.parquet"),
         "--out", str(out)], cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    num_rows = pq.read_metadata(elsewhere / "x.parquet").num_rows
    assert len(out.read_text().splitlines()) == num_rows + 1


def test_prediction_batches_drop_all_padding_columns_like_evaluation(trained, workdir,
                                                                     monkeypatch):
    """Prediction reads its batches as evaluation does: trimmed to the batch's longest history
    when the model allows it, with the same scores as untrimmed batches."""
    from fuxictr_mmctr.pipeline import experiment
    from fuxictr_mmctr.pipeline.prediction import predict_scores

    made_loaders = []
    real_make_loader = experiment.make_loader

    def recording_make_loader(*args, **kwargs):
        loader = real_make_loader(*args, **kwargs)
        made_loaders.append(loader)
        return loader

    monkeypatch.setattr(experiment, "make_loader", recording_make_loader)
    valid = "data/MicroLens_synth_tiny/valid.parquet"
    with inside(workdir):
        trimmed = predict_scores("./config/", TINY, -1, valid)
        assert made_loaders[-1].trim_history
        monkeypatch.setattr(experiment, "make_loader", lambda *args, **kwargs: real_make_loader(
            *args, **{**kwargs, "trim_history": False}))
        untrimmed = predict_scores("./config/", TINY, -1, valid)
    np.testing.assert_allclose(trimmed, untrimmed, rtol=0, atol=1e-5)


def test_prediction_on_any_parquet_writes_id_score(trained, workdir):
    out = workdir / "valid_scores.csv"
    result = subprocess.run(
        [sys.executable, "prediction.py", "--expid", TINY, "--data",
         "data/MicroLens_synth_tiny/valid.parquet", "--out", str(out)],
        cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "ID,score"
    num_valid = pq.read_metadata(workdir / "data" / "MicroLens_synth_tiny" / "valid.parquet").num_rows
    assert len(lines) == num_valid + 1


@pytest.mark.parametrize("model", registered_models())
def test_every_tiny_expid_trains_through_run_expid_and_prints_its_result(workdir, model):
    expid = f"{model}_MicroLens_tiny"
    result = subprocess.run([sys.executable, "run_expid.py", "--expid", expid],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("result ")]
    assert len(lines) == 1 and lines[0].startswith(f"result expid={expid} AUC=")
    valid_auc = float(lines[0].split(" AUC=")[1].split()[0])
    assert valid_auc > TINY_LEARNS_AUC, lines[0]


def test_missing_real_data_says_where_to_get_it(workdir):
    result = subprocess.run(
        [sys.executable, "run_expid.py", "--expid", "Transformer_DCN_MicroLens"],
        cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "MicroLens_1M_MMCTR" in result.stderr and "Transformer_DCN_MicroLens_demo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("script", ["run_expid.py", "prediction.py"])
def test_gpu_without_cuda_is_one_line_not_a_cpu_run(workdir, script):
    result = subprocess.run([sys.executable, script, "--expid", TINY, "--gpu", "0"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 2, result.stdout[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: --gpu 0 asked for a GPU but this machine has no CUDA device "
        f"(torch {torch.__version__}); use --gpu -1 for the CPU"]
    assert "result expid=" not in result.stdout


def test_constant_test_labels_skip_test_metrics_with_one_log_line(tmp_path, tiny_dataset):
    working_folder(tmp_path, tiny_dataset)
    data = tmp_path / "data" / "MicroLens_synth_tiny"
    test = pq.read_table(data / "test.parquet")
    pq.write_table(test.append_column("label", pa.array(np.zeros(test.num_rows, np.float32))),
                   data / "test.parquet")
    with inside(tmp_path):
        result = run_experiment("./config/", TINY, gpu=-1)
    assert result["test"] is None and result["valid"]["AUC"] > TINY_MIN_AUC
    assert result["test_auc_truth"] is not None
    log = (tmp_path / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.log").read_text()
    assert "every label is [0.0] (a placeholder column); test metrics skipped" in log


def test_shuffle_is_honoured_or_refused(trained, workdir):
    from fuxictr_mmctr.pipeline.experiment import load_params, make_loader, prepare

    with inside(workdir):
        params = load_params("./config/", TINY)
        _, catalogue = prepare(params)
        assert make_loader(params, catalogue, params["train_data"], True, "cpu").shuffle
        params["shuffle"] = False
        loader = make_loader(params, catalogue, params["train_data"], True, "cpu")
        assert not loader.shuffle
        np.testing.assert_array_equal(loader.row_indices(), np.arange(loader.num_rows))
        params["shuffle"] = "yes"
        with pytest.raises(UserError, match="shuffle must be True or False, got 'yes'"):
            make_loader(params, catalogue, params["train_data"], True, "cpu")


def test_unknown_expid_is_one_line(workdir):
    result = subprocess.run([sys.executable, "run_expid.py", "--expid", "NoSuchExpid"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 2 and "NoSuchExpid" in result.stderr
    assert "Traceback" not in result.stderr


def _write_tuner(workdir, name, space):
    path = workdir / "config" / "tuner" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base_config": "./config/", "base_expid": TINY,
                                    "dataset_id": "MicroLens_synth_tiny", "tuner_space": space}))
    return path


def test_tuner_grid_runs_every_point(workdir):
    config = _write_tuner(workdir, "tiny_grid", {"learning_rate": [1.0e-3, 2.0e-3], "epochs": 1})
    result = subprocess.run([sys.executable, "run_param_tuner.py", "--config", str(config),
                             "--gpu", "-1", "-1"], cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (workdir / "tiny_grid.csv").read_text().strip().splitlines()
    assert len(rows) == 2
    assert all("AUC: " in row for row in rows)


def test_tuner_makes_the_data_once_before_the_grid_starts(tmp_path, monkeypatch):
    from fuxictr import autotuner

    from fuxictr_mmctr.pipeline import tuner

    working_folder(tmp_path, ignore=["*_tuner*"])
    config = _write_tuner(tmp_path, "fresh_grid", {"learning_rate": [1.0e-3, 2.0e-3]})
    data = tmp_path / "data" / "MicroLens_synth_tiny"
    seen = {}

    def grid_search(config_dir, gpus, tag, script):  # what each parallel run would find
        seen["data_made"] = (data / "train.parquet").exists() and (data / "oracle.json").exists()

    monkeypatch.setattr(autotuner, "grid_search", grid_search)
    monkeypatch.chdir(tmp_path)
    assert not data.exists()
    tuner.run_grid(str(config), [-1, -1])
    assert seen == {"data_made": True}


def test_tuner_keeps_every_value_of_a_dataset_level_key(workdir):
    config = _write_tuner(workdir, "dataset_grid", {"synthetic_seed": [1, 2]})
    config_dir = expand_tuner_config(str(config))
    with open(os.path.join(config_dir, "dataset_config.yaml")) as handle:
        datasets = yaml.safe_load(handle)
    with open(os.path.join(config_dir, "model_config.yaml")) as handle:
        expids = yaml.safe_load(handle)
    assert sorted(d["synthetic_seed"] for d in datasets.values()) == [1, 2]
    assert sorted(e["dataset_id"] for e in expids.values()) == sorted(datasets)
    # Each seed's data lives in its own folder: one would otherwise regenerate over the other.
    for dataset_id, dataset in datasets.items():
        for key in ("train_data", "valid_data", "test_data", "item_info"):
            assert os.path.basename(os.path.dirname(dataset[key])) == dataset_id


def test_torchrun_two_cpu_processes_train_and_report_once(tmp_path):
    working_folder(tmp_path, scripts=["run_expid.py"])
    # No data yet: rank 0 generates it while rank 1 waits.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "run_expid.py", "--expid", TINY, "--gpu", "-1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("result expid=")]
    assert len(summaries) == 1
    auc_value = float(summaries[0].split("AUC=")[1].split()[0])
    assert auc_value > TINY_MIN_AUC
    assert len((tmp_path / "config.csv").read_text().strip().splitlines()) == 1
    assert "Distributed: 2 processes (CPU, gloo)" in result.stderr
    log_files = os.listdir(tmp_path / "checkpoints" / "MicroLens_synth_tiny")
    assert sorted(f for f in log_files if f.endswith(".log")) == [f"{TINY}.log"]
