"""benchmarks/compare_models.py: seeded runs, reuse, failed rows, outputs and row analysis."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import comparison
from fuxictr_mmctr.pipeline.config_check import expids_in
from fuxictr_mmctr.pipeline.experiment import load_params
from tests.builders import REPO, inside, working_folder

TINY = "MicroLens_synth_tiny"


def add_broken_expid(folder) -> None:
    """``Broken_tiny``: the DCNv2 tiny config on a dataset whose files do not exist, so it passes
    the config check and fails when it runs."""
    dataset_config = os.path.join(folder, "config", "dataset_config.yaml")
    with open(dataset_config, encoding="utf-8") as handle:
        datasets = yaml.safe_load(handle)
    missing = dict(datasets["MicroLens_1M_x1"])
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        missing[key] = f"./data/{TINY}/absent_{key}.parquet"
    datasets[TINY + "_absent"] = missing
    with open(dataset_config, "w", encoding="utf-8") as handle:
        yaml.safe_dump(datasets, handle)
    tiny = load_params(os.path.join(folder, "config"), "DCNv2_MicroLens_tiny")
    own = {key: tiny[key] for key in ("model", "embedding_dim", "batch_size", "epochs")}
    with open(os.path.join(folder, "config", "model_config", "Broken.yaml"), "w",
              encoding="utf-8") as handle:
        yaml.safe_dump({"Broken_tiny": {**own, "dataset_id": TINY + "_absent"}}, handle)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_dataset):
    """One comparison on tiny data: a working expid (2 seeds), and a broken one."""
    folder = working_folder(tmp_path_factory.mktemp("compare"), tiny_dataset)
    add_broken_expid(folder)
    command = [sys.executable, os.path.join(REPO, "benchmarks", "compare_models.py"),
               "--dataset", TINY + "_absent", "--expids", "Broken_tiny", "--seeds", "1",
               "--out", "results_absent"]
    with inside(folder):
        result = comparison.compare("config", TINY, ["DCNv2_MicroLens_tiny"],
                                    num_seeds=2, devices=[-1, -1], out_dir="results",
                                    progress=False)
        broken = subprocess.run(command, capture_output=True, text=True, timeout=300)
        again = comparison.compare("config", TINY, ["DCNv2_MicroLens_tiny"], num_seeds=2,
                                   out_dir="results", progress=False)
    return folder, result, broken, again


def row_of(result, expid: str) -> dict:
    """The table row of ``expid`` (training-free rows may rank above it)."""
    return next(row for row in result.rows if row["expid"] == expid)


def test_writes_csv_markdown_and_png(compared):
    folder, result, _, _ = compared
    for name in ("comparison.csv", "comparison.md", "comparison.png"):
        path = os.path.join(folder, "results", name)
        assert os.path.getsize(path) > 0, name
    with open(os.path.join(folder, "results", "comparison.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(folder, "results", "comparison.csv"), encoding="utf-8") as handle:
        rows = {row["expid"]: row for row in csv.DictReader(handle)}
    good = rows["DCNv2_MicroLens_tiny"]
    assert good["status"] == "ok" and good["seeds_ok"] == "2"
    assert 0.5 < float(good["valid_auc_mean"]) < float(good["oracle_auc"])
    seed_aucs = [run.record["valid"]["AUC"] for run in result.runs
                 if run.expid == "DCNv2_MicroLens_tiny"]
    assert float(good["valid_auc_std"]) == pytest.approx(np.std(seed_aucs, ddof=1), abs=1e-6)
    assert float(good["valid_auc_mean"]) == pytest.approx(np.mean(seed_aucs), abs=1e-6)
    assert float(good["gap_to_oracle"]) == pytest.approx(
        float(good["oracle_auc"]) - float(good["valid_auc_mean"]), abs=1e-5)
    assert int(good["parameters"]) > 0 and float(good["samples_per_second"]) > 0
    assert float(good["peak_host_mb"]) > 0 and 0 < float(good["gauc_mean"]) <= 1
    markdown = open(os.path.join(folder, "results", "comparison.md"), encoding="utf-8").read()
    assert "| DCNv2_MicroLens_tiny |" in markdown and "Oracle valid AUC" in markdown


def test_each_seed_is_its_own_recorded_run(compared):
    folder, result, _, _ = compared
    records = [run.record for run in result.runs if run.expid == "DCNv2_MicroLens_tiny"]
    assert sorted(record["seed"] for record in records) == [2025, 2026]
    assert records[0]["valid"]["AUC"] != records[1]["valid"]["AUC"]  # seeds differ
    for record in records:
        path = os.path.join(folder, "results", "runs",
                            f"DCNv2_MicroLens_tiny_seed{record['seed']}.json")
        assert json.load(open(path, encoding="utf-8"))["config_hash"] == record["config_hash"]


@pytest.mark.parametrize("expids, needle", [
    (["DCNv2_MicroLens_tin"], "expid DCNv2_MicroLens_tin is not in ./config/; did you mean "
                              "DCNv2_MicroLens_tiny?"),
    (["DCNv2_MicroLens_tiny", "DIN_MicroLens_demo"], "not on the valid split of"),
])
def test_an_unknown_or_foreign_expid_is_a_usage_error_that_writes_nothing(compared, expids,
                                                                          needle):
    """A mistyped expid must not replace a table of results with a table of one failure."""
    folder, _, _, _ = compared
    table = os.path.join(folder, "results", "comparison.csv")
    before = open(table, encoding="utf-8").read()
    command = [sys.executable, os.path.join(REPO, "benchmarks", "compare_models.py"),
               "--dataset", TINY, "--expids", *expids, "--seeds", "1", "--out", "results"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], done.stderr
    assert open(table, encoding="utf-8").read() == before


def test_results_are_never_replaced_by_failures(tmp_path):
    table = tmp_path / "comparison.csv"
    table.write_text("expid,status\nA,ok\nB,failed\nC,ok\n")
    rows = [{"expid": "A", "status": "failed", "valid_auc_mean": None},
            {"expid": "B", "status": "failed", "valid_auc_mean": None},
            {"expid": "C", "status": "ok", "valid_auc_mean": 0.7},
            {"expid": "D", "status": "failed", "valid_auc_mean": None}]
    assert comparison.rows_that_would_fail(str(table), rows) == ["A"]
    assert comparison.rows_that_would_fail(str(tmp_path / "absent.csv"), rows) == []


def test_a_run_dies_with_a_killed_comparison(tmp_path, tiny_dataset):
    """SIGKILL on compare_models.py leaves no orphan training process behind."""
    import signal
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    folder = working_folder(tmp_path, tiny_dataset)
    tiny = load_params(os.path.join(folder, "config"), "DCNv2_MicroLens_tiny")
    own = {key: tiny[key] for key in ("model", "dataset_id", "embedding_dim", "batch_size")}
    with open(os.path.join(folder, "config", "model_config", "Slow.yaml"), "w",
              encoding="utf-8") as handle:  # trains far longer than the test waits
        yaml.safe_dump({"Slow_tiny": {**own, "epochs": 100000, "early_stop_patience": 100000}},
                       handle)
    command = [sys.executable, os.path.join(REPO, "benchmarks", "compare_models.py"),
               "--dataset", TINY, "--expids", "Slow_tiny", "--seeds", "1",
               "--out", "results_killed"]
    parent = subprocess.Popen(command, cwd=str(folder), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    record = os.path.join("results_killed", "runs", "Slow_tiny_seed2025.json")

    def children():
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    mine = os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(folder)
                    if record.encode() in handle.read() and mine:
                        found.append(int(pid))
            except OSError:
                continue
        return found

    deadline = time.time() + 120
    while not children() and time.time() < deadline and parent.poll() is None:
        time.sleep(0.2)
    assert children(), "the run's process never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while children() and time.time() < deadline:
        time.sleep(0.2)
    left = children()
    for pid in left:  # without the fix: do not leave it training
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_run_that_fails_while_training_is_marked_failed(compared):
    folder, _, broken, _ = compared
    assert broken.returncode == 1, broken.stderr
    assert "failed: Broken_tiny:" in broken.stdout and "absent_train_data" in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr
    with open(os.path.join(folder, "results_absent", "comparison.csv"), encoding="utf-8") as h:
        row = next(csv.DictReader(h))
    assert row["status"] == "failed" and row["valid_auc_mean"] == ""
    assert os.path.exists(os.path.join(folder, "results_absent", "comparison.png"))


def test_finished_runs_are_reused(compared):
    _, result, _, again = compared
    assert result.trained == 2
    assert again.trained == 0 and again.reused == 2
    assert row_of(again, "DCNv2_MicroLens_tiny")["valid_auc_mean"] == pytest.approx(
        row_of(result, "DCNv2_MicroLens_tiny")["valid_auc_mean"])


def test_no_train_tables_show_missing_seeds_as_not_run(compared):
    folder, _, _, _ = compared
    with inside(folder):
        table = comparison.compare("config", TINY, ["DCNv2_MicroLens_tiny"], num_seeds=3,
                                   out_dir="results", progress=False, train=False)
    row = row_of(table, "DCNv2_MicroLens_tiny")
    assert table.trained == 0 and row["status"] == "partial"
    assert row["seeds_ok"] == 2 and row["seeds"] == 3 and "not run" in row["reason"]
    assert not os.path.exists(os.path.join(folder, "results", "runs",
                                           "DCNv2_MicroLens_tiny_seed2027.json"))


def test_changed_config_is_trained_again(tmp_path, tiny_dataset):
    folder = working_folder(tmp_path, tiny_dataset)
    with inside(folder):
        runs = comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny"], 1, "results")
        record = {"status": "ok", "config_hash": runs[0].expected_hash}
        os.makedirs(os.path.dirname(runs[0].record_path))
        with open(runs[0].record_path, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        assert comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny"], 1,
                                    "results")[0].record == record
        path = os.path.join("config", "model_config", "DCNv2.yaml")
        text = open(path, encoding="utf-8").read()
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\nDCNv2_MicroLens_tiny_lr: {model: DCNv2}\n")
        replan = comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny"], 1, "results")
        assert replan[0].record == record  # an unrelated expid changes nothing
        assert "\nDCNv2_MicroLens_tiny:\n" in text
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text.replace("\nDCNv2_MicroLens_tiny:\n",
                                      "\nDCNv2_MicroLens_tiny:\n    learning_rate: 0.0123\n"))
        assert load_params("config", "DCNv2_MicroLens_tiny")["learning_rate"] == 0.0123
        replan = comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny"], 1, "results")
    assert replan[0].record is None


def test_failure_reason_is_one_line(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("Epoch 1: 10%\rEpoch 1: 50%\nerror: cannot write x: disk full\n")
    assert comparison.failure_reason(str(log), 2) == "cannot write x: disk full"
    log.write_text("training...\nKilled\n")
    assert comparison.failure_reason(str(log), -9) == "killed by signal 9 (last output: Killed)"
    assert comparison.failure_reason(str(tmp_path / "none.log"), 1) == "exit status 1, no output"


def test_bad_requests_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no expids"):
        comparison.compare("config", TINY, [], out_dir=str(tmp_path))
    with pytest.raises(UserError, match="at least 1"):
        comparison.compare("config", TINY, ["DCNv2_MicroLens_tiny"], num_seeds=0,
                           out_dir=str(tmp_path))


def test_every_expid_of_the_config_passes_the_config_check():
    config_dir = os.path.join(REPO, "config")
    expids = expids_in(config_dir)
    assert len(expids) >= 40
    small_eval_batches = []
    for expid in expids:
        params = load_params(config_dir, expid)
        assert params["model_id"] == expid
        # Evaluation batches cost no accuracy: 379,142 challenge test rows in batches of 128
        # would only be slow. Tiny expids keep theirs (their splits have 1,000 rows).
        if "tiny" not in params["dataset_id"]:
            if (params.get("eval_batch_size") or params["batch_size"]) < 1024:
                small_eval_batches.append(expid)
    assert small_eval_batches == []


def test_expids_on_the_same_valid_split_are_compared_others_fail(tmp_path, tiny_dataset):
    folder = working_folder(tmp_path, tiny_dataset)
    with inside(folder):
        runs = comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny",
                                                     "DIN_MicroLens_item_levels_tiny",
                                                     "DIN_MicroLens_demo"], 1, "results")
        with pytest.raises(UserError, match="dataset_id Nowhere not found"):
            comparison.plan_runs("config", "Nowhere", ["DCNv2_MicroLens_tiny"], 1, "results")
    errors = {run.expid: run.error for run in runs}
    assert errors["DCNv2_MicroLens_tiny"] is None
    assert errors["DIN_MicroLens_item_levels_tiny"] is None   # same rows, richer item table
    assert "not on the valid split of" in errors["DIN_MicroLens_demo"]


def test_peak_memory_is_the_runs_own_not_its_starters(tmp_path):
    """A run started by a process that once held a lot of memory reports its own peak (getrusage's
    ru_maxrss carries the starter's peak across fork + exec on Linux)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])          # touch every page: resident
    code = ("from fuxictr_mmctr.pipeline.run_record import peak_host_mb; "
            "print(peak_host_mb())")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=REPO)
    del ballast
    assert float(child.stdout) < 400


def test_records_without_a_reliable_peak_show_none():
    records = [{"model": "M", "valid": {"AUC": 0.7, "gAUC": 0.7, "logloss": 0.5},
                "peak_host_mb": 1322.0, "samples_per_second": 10.0}]
    assert comparison._metric_columns(records)["peak_host_mb"] is None
    records[0]["peak_host_mb_source"] = "VmHWM"
    assert comparison._metric_columns(records)["peak_host_mb"] == 1322.0


def write_split_files(folder, oracle: dict, train_bytes: int) -> dict:
    """A data folder with ``train_bytes`` of train split and ``oracle`` as its oracle.json;
    the params that point at it."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train.parquet"), "wb") as handle:
        handle.write(b"x" * train_bytes)
    if oracle is not None:
        with open(os.path.join(folder, "oracle.json"), "w", encoding="utf-8") as handle:
            json.dump(oracle, handle)
    return {"train_data": os.path.join(folder, "train.parquet")}


def test_synthetic_data_identity_is_the_same_on_every_machine(tmp_path):
    """The same generated data hashes the same wherever it was generated: the time the generator
    took, and parquet sizes that change with the pyarrow version, are not part of it. So the
    committed records are reused (and ``--no-train`` finds them) after a fresh clone."""
    from fuxictr_mmctr.pipeline import run_record
    oracle = {"preset": "demo", "seed": 2025, "generator_version": 2,
              "oracle_auc": {"valid": 0.8316}, "generation_seconds": 19.11}
    here = write_split_files(tmp_path / "here", oracle, 1000)
    there = write_split_files(tmp_path / "there", {**oracle, "generation_seconds": 42.5}, 1003)
    assert (run_record.data_identity(here) == run_record.data_identity(there))
    reseeded = write_split_files(tmp_path / "reseeded", {**oracle, "seed": 7}, 1000)
    assert run_record.data_identity(here) != run_record.data_identity(reseeded)


def test_user_data_identity_is_its_file_sizes(tmp_path):
    from fuxictr_mmctr.pipeline import run_record
    small = write_split_files(tmp_path / "small", None, 1000)
    larger = write_split_files(tmp_path / "larger", None, 2000)
    assert run_record.data_identity(small) != run_record.data_identity(larger)


# ---------------------------------------------------------------------- row analysis
def test_runs_record_slices_and_bootstrap_and_tables_hold_them(compared):
    folder, result, _, _ = compared
    record = next(run.record for run in result.runs if run.expid == "DCNv2_MicroLens_tiny")
    slices = record["valid_slices"]
    assert slices["version"] == 1 and list(slices["popularity"]) == ["cold", "tail", "head"]
    assert sum(cell["rows"] for cell in slices["history_length"].values()) == 1000
    bootstrap = record["valid_bootstrap"]
    assert bootstrap["seed"] == 20250101 and bootstrap["rows"] == 1000
    assert len(bootstrap["auc"]) == 1000
    assert abs(np.nanmean(np.array(bootstrap["auc"], dtype=float)) - record["valid"]["AUC"]) < 0.02
    text = open(os.path.join(folder, "results", "runs", "DCNv2_MicroLens_tiny_seed2025.json"),
                encoding="utf-8").read()
    assert '"auc": [' in text and len(text.splitlines()) < 80   # the 1,000 AUCs on one line
    with open(os.path.join(folder, "results", "comparison.csv"), encoding="utf-8") as handle:
        rows = {row["expid"]: row for row in csv.DictReader(handle)}
    assert rows["DCNv2_MicroLens_tiny"]["significance"] == "best"
    for name in ("popularity", "likes_level", "title_cosine", "cooccurrence"):
        row = rows[f"heuristic_{name}"]
        assert row["model"] == "heuristic" and row["seeds"] == "" and row["logloss_mean"] == ""
        assert 0.3 < float(row["valid_auc_mean"]) < 0.9 and row["test_auc_mean"] != ""
        assert row["significance"] in ("*", "≈") and float(row["p_value"]) <= 1
    for name in ("comparison_slices.csv", "comparison_slices.md", "comparison_slices.png"):
        assert os.path.getsize(os.path.join(folder, "results", name)) > 0, name
    with open(os.path.join(folder, "results", "comparison_slices.csv"), encoding="utf-8") as h:
        sliced = {row["expid"]: row for row in csv.DictReader(h)}
    assert int(sliced["(rows)"]["popularity:head"]) > 0
    assert float(sliced["DCNv2_MicroLens_tiny"]["popularity:head"]) > 0.5
    assert sliced["heuristic_popularity"]["popularity:cold"] in ("", "0.5")   # constant score


def write_record(run, model: str, scores=None, data=None) -> dict:
    """A finished run's record for ``run`` (a PlannedRun); with ``scores`` (valid, file order)
    its valid AUC and, from ``data``, the slices and bootstrap a run now records."""
    from fuxictr_mmctr.pipeline import row_analysis
    from fuxictr_mmctr.pipeline.run_record import record_text
    from fuxictr_mmctr.training.metrics import auc

    record = {"status": "ok", "expid": run.expid, "model": model, "seed": run.seed,
              "config_hash": run.expected_hash, "valid": {"AUC": 0.7, "gAUC": 0.7,
                                                          "logloss": 0.5},
              "test_auc": None, "oracle_auc": 0.8, "parameters": 10, "device": "cpu"}
    if scores is not None:
        record["valid"]["AUC"] = auc(data.split("valid").label, scores)
        record.update(row_analysis.valid_record(scores, data))
    os.makedirs(os.path.dirname(run.record_path), exist_ok=True)
    with open(run.record_path, "w", encoding="utf-8") as handle:
        handle.write(record_text(record))
    return record


def valid_truth(folder) -> np.ndarray:
    """The tiny dataset's true valid click probabilities, file order."""
    import pandas as pd

    truth = pd.read_parquet(os.path.join(folder, "truth.parquet"))
    return truth[truth["split"] == "valid"].sort_values("row")["click_prob"].to_numpy()


def test_significance_marks_from_recorded_bootstraps(tmp_path, tiny_dataset):
    """No training: records of a strong expid, a much weaker one and one recorded before the
    row analysis existed. The weak one is significantly worse, the old one has no mark."""
    from fuxictr_mmctr.pipeline import row_analysis

    folder = working_folder(tmp_path, tiny_dataset)
    data = row_analysis.DatasetRows(os.path.join(folder, "data", TINY))
    truth = valid_truth(data.folder)
    rng = np.random.default_rng(0)
    expids = ["DCNv2_MicroLens_tiny", "QIN_MicroLens_tiny", "DIN_MicroLens_tiny"]
    with inside(folder):
        runs = comparison.plan_runs("config", TINY, expids, 2, "results")
        for run in runs:
            if run.expid == "DCNv2_MicroLens_tiny":
                write_record(run, "DCNv2", truth + rng.normal(0, 0.02, len(truth)), data)
            elif run.expid == "QIN_MicroLens_tiny":
                write_record(run, "QIN", truth + rng.normal(0, 0.5, len(truth)), data)
            else:
                write_record(run, "DIN")          # the old format: no slices, no bootstrap
        table = comparison.compare("config", TINY, expids, num_seeds=2, out_dir="results",
                                   progress=False, train=False)
    rows = {row["expid"]: row for row in table.rows}
    assert table.trained == 0
    assert rows["DCNv2_MicroLens_tiny"]["significance"] == "best"
    weak = rows["QIN_MicroLens_tiny"]
    assert weak["significance"] == "*" and weak["diff_high"] < 0 and weak["p_value"] < 0.05
    assert weak["diff_to_best"] == pytest.approx(
        weak["valid_auc_mean"] - rows["DCNv2_MicroLens_tiny"]["valid_auc_mean"])
    assert rows["DIN_MicroLens_tiny"].get("significance") is None
    markdown = open(os.path.join(folder, "results", "comparison.md"), encoding="utf-8").read()
    assert "| DCNv2_MicroLens_tiny |" in markdown and "| best |" in markdown
    din_line = next(line for line in markdown.splitlines() if "| DIN_MicroLens_tiny |" in line)
    assert din_line.split(" | ")[2] == "—" and din_line.endswith("| 2/2 |")
    assert "| heuristic_cooccurrence |" in markdown and "training-free |" in markdown
    slices_md = open(os.path.join(folder, "results", "comparison_slices.md"),
                     encoding="utf-8").read()
    din_slices = next(line for line in slices_md.splitlines() if "| DIN_MicroLens_tiny |" in line)
    assert din_slices.count("—") == sum(len(b) for b in data.slices("valid").values())


def test_old_records_alone_still_render(tmp_path, tiny_dataset):
    """Records written before the row analysis (the committed ones): the tables are written,
    the new columns are blank or "—", and the heuristics still get their rows (unmarked: the
    best trained row has no bootstrap)."""
    folder = working_folder(tmp_path, tiny_dataset)
    with inside(folder):
        runs = comparison.plan_runs("config", TINY, ["DCNv2_MicroLens_tiny"], 1, "results")
        write_record(runs[0], "DCNv2")
        table = comparison.compare("config", TINY, ["DCNv2_MicroLens_tiny"], num_seeds=1,
                                   out_dir="results", progress=False, train=False)
    assert table.reused == 1
    with open(os.path.join(folder, "results", "comparison.csv"), encoding="utf-8") as handle:
        rows = {row["expid"]: row for row in csv.DictReader(handle)}
    assert rows["DCNv2_MicroLens_tiny"]["valid_auc_mean"] == "0.7"
    assert all(row["significance"] == "" and row["diff_to_best"] == "" for row in rows.values())
    assert len(rows) == 5
    markdown = open(os.path.join(folder, "results", "comparison.md"), encoding="utf-8").read()
    line = next(line for line in markdown.splitlines() if "| DCNv2_MicroLens_tiny |" in line)
    assert line.startswith("| DCNv2_MicroLens_tiny | 0.7000 | — | 0.7000 | 0.5000 |")
    with open(os.path.join(folder, "results", "comparison_slices.csv"), encoding="utf-8") as h:
        sliced = {row["expid"]: row for row in csv.DictReader(h)}
    assert all(value == "" for key, value in sliced["DCNv2_MicroLens_tiny"].items()
               if ":" in key)
