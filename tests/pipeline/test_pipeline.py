"""End to end: run_expid, prediction and the tuner on the tiny synthetic data."""
import csv
import io
import os
import shutil
import subprocess
import sys
import zipfile

import pyarrow.parquet as pq
import pytest
import yaml

from fuxictr_mmctr.pipeline.experiment import run_experiment
from fuxictr_mmctr.pipeline.prediction import run_prediction
from fuxictr_mmctr.pipeline.tuner import expand_tuner_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "Transformer_DCN_MicroLens_tiny"
# The tiny data's oracle AUC is ~0.82; three quick epochs of the scaled-down model reach ~0.73.
TINY_MIN_AUC = 0.68


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_dataset):
    """A working folder with the repository's config and the tiny data in ./data/."""
    folder = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(os.path.join(REPO, "config"), folder / "config",
                    ignore=shutil.ignore_patterns("*_tuner"))
    shutil.copytree(tiny_dataset, folder / "data" / "MicroLens_synth_tiny")
    for script in ("run_expid.py", "prediction.py", "run_param_tuner.py"):
        shutil.copy(os.path.join(REPO, script), folder / script)
    return folder


@pytest.fixture(scope="module")
def trained(workdir):
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        yield run_experiment("./config/", TINY, gpu=-1)
    finally:
        os.chdir(cwd)


def test_tiny_run_learns_and_reports(trained, workdir):
    assert trained["valid"]["AUC"] > TINY_MIN_AUC
    assert trained["valid"]["AUC"] < trained["oracle_auc"] + 0.02
    assert os.path.exists(workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.model")
    rows = (workdir / "config.csv").read_text().strip().splitlines()
    assert f"[exp_id] {TINY}" in rows[-1] and "AUC: " in rows[-1]


def test_submission_has_one_row_per_test_row_in_order(trained, workdir):
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        out = run_prediction("./config/", TINY, gpu=-1)
    finally:
        os.chdir(cwd)
    with zipfile.ZipFile(workdir / out) as archive:
        assert archive.namelist() == ["prediction.csv"]
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("prediction.csv"))))
    num_test = pq.read_metadata(workdir / "data" / "MicroLens_synth_tiny" / "test.parquet").num_rows
    assert len(rows) == num_test
    assert [int(row["ID"]) for row in rows] == list(range(num_test))
    scores = [float(row["Task2"]) for row in rows]
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 10


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


def test_missing_real_data_says_where_to_get_it(workdir):
    result = subprocess.run(
        [sys.executable, "run_expid.py", "--expid", "Transformer_DCN_MicroLens"],
        cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "MicroLens_1M_MMCTR" in result.stderr and "Transformer_DCN_MicroLens_demo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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


def test_tuner_keeps_every_value_of_a_dataset_level_key(workdir):
    config = _write_tuner(workdir, "dataset_grid", {"synthetic_seed": [1, 2]})
    config_dir = expand_tuner_config(str(config))
    with open(os.path.join(config_dir, "dataset_config.yaml")) as handle:
        datasets = yaml.safe_load(handle)
    with open(os.path.join(config_dir, "model_config.yaml")) as handle:
        expids = yaml.safe_load(handle)
    assert sorted(d["synthetic_seed"] for d in datasets.values()) == [1, 2]
    assert sorted(e["dataset_id"] for e in expids.values()) == sorted(datasets)


def test_torchrun_two_cpu_processes_train_and_report_once(tmp_path):
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config",
                    ignore=shutil.ignore_patterns("tuner"))
    shutil.copy(os.path.join(REPO, "run_expid.py"), tmp_path / "run_expid.py")
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
