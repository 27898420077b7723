"""Hostile files and paths: read-only data, full disks, killed writes, wrong paths, damaged zips,
bad tuner configs and failing grid points.

Where what the user sees is the point, the command runs as a subprocess: exit status 2, exactly
one ``error:`` line on stderr naming the culprit, no traceback, nothing half-written and nothing
destroyed.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

from fuxictr_mmctr import cli, fileio
from fuxictr_mmctr.data import feature_map as feature_maps
from fuxictr_mmctr.data.feature_map import build_feature_map
from fuxictr_mmctr.data.loader import load_split
from fuxictr_mmctr.data.synthetic import ORACLE_FILE, OUTPUT_FILES, generate
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import atomic_path, write_text_atomic
from fuxictr_mmctr.pipeline import tuner
from fuxictr_mmctr.pipeline.datasets import ensure_dataset
from tests.builders import dataset_params, working_folder, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_EXPID = "Transformer_DCN_MicroLens_tiny"
HOUR = 3600


# --- helpers -------------------------------------------------------------------------------

def run(args, cwd, timeout=300, **kwargs):
    """Run a command (a list), return the CompletedProcess with text output."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def run_cli(*args, cwd, **kwargs):
    return run([sys.executable, "-m", "fuxictr_mmctr.cli", *args], cwd=cwd, **kwargs)


def assert_one_error_line(result, *culprits):
    """Exit 2, one ``error:`` line naming every culprit, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for culprit in culprits:
        assert culprit in errors[0], (culprit, errors[0])
    return errors[0]


def snapshot(folder):
    """``{relative path: (size, mtime_ns)}`` of everything under ``folder``."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return found


def temporaries(folder):
    return [os.path.join(root, name) for root, dirs, files in os.walk(folder)
            for name in dirs + files if name.startswith(".tmp-")]


def age(path, seconds):
    """Set ``path``'s mtime ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def unwritable(*folders):
    """A stand-in for :func:`fileio.unwritable_reason` that reports ``folders`` (and anything
    under them) read-only, as on a shared read-only mount."""
    real = fileio.unwritable_reason
    blocked = [os.path.abspath(folder) for folder in folders]

    def reason(folder):
        folder = os.path.abspath(folder)
        if any(folder == b or folder.startswith(b + os.sep) for b in blocked):
            return f"{folder} is on a read-only mount"
        return real(folder)

    return reason


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """An empty ``$XDG_CACHE_HOME`` for the test."""
    folder = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


# --- 1. read-only data folder --------------------------------------------------------------

def test_read_only_data_folder_caches_arrays_in_the_user_cache(tmp_path, user_cache, monkeypatch,
                                                               caplog):
    data = tmp_path / "shared" / "ds"
    write_dataset(data)
    monkeypatch.setattr(fileio, "unwritable_reason", unwritable(tmp_path / "shared"))
    with caplog.at_level(logging.INFO):
        first = load_split(data / "train.parquet")
    assert not first.from_cache
    assert not (data / ".cache").exists()
    cached = [root for root, _, files in os.walk(user_cache) if "meta.json" in files]
    assert len(cached) == 1 and os.path.basename(os.path.dirname(cached[0])).startswith("ds-")
    lines = [r.getMessage() for r in caplog.records if "Array cache" in r.getMessage()]
    assert len(lines) == 1 and os.path.dirname(cached[0]) in lines[0], lines
    assert "read-only" in lines[0]
    again = load_split(data / "train.parquet")  # the next run finds the fallback cache
    assert again.from_cache
    assert (again.columns["item_id"] == first.columns["item_id"]).all()


def test_two_read_only_datasets_never_share_a_fallback_cache(tmp_path, user_cache, monkeypatch):
    for name, seed in (("a", 1), ("b", 2)):
        write_dataset(tmp_path / "shared" / name / "ds", seed=seed)
    monkeypatch.setattr(fileio, "unwritable_reason", unwritable(tmp_path / "shared"))
    loaded = {name: load_split(tmp_path / "shared" / name / "ds" / "train.parquet")
              for name in "ab"}
    roots = {os.path.dirname(root) for root, _, files in os.walk(user_cache)
             if "meta.json" in files}
    assert len(roots) == 2  # same folder name "ds", same file names: still two caches
    assert (loaded["a"].columns["item_id"] != loaded["b"].columns["item_id"]).any()


def test_nothing_writable_reads_without_a_cache_and_says_so(tmp_path, user_cache, monkeypatch,
                                                            caplog):
    data = tmp_path / "ds"
    write_dataset(data)
    monkeypatch.setattr(fileio, "unwritable_reason", unwritable(tmp_path))
    with caplog.at_level(logging.WARNING):
        split = load_split(data / "valid.parquet")
    assert not split.from_cache and len(split) == 50
    assert not (data / ".cache").exists() and not user_cache.exists()
    assert any("reading without a cache" in r.getMessage() for r in caplog.records)


def test_read_only_data_root_puts_feature_map_in_the_user_cache(tmp_path, user_cache,
                                                                monkeypatch, caplog):
    data = tmp_path / "shared" / "ds"
    write_dataset(data)
    params = dataset_params(data)
    monkeypatch.setattr(fileio, "unwritable_reason", unwritable(tmp_path / "shared"))
    with caplog.at_level(logging.INFO):
        feature_map = build_feature_map(params)
    primary = data / "feature_map.json"
    fallback = feature_maps.fallback_feature_map_file(str(primary))
    assert not primary.exists() and os.path.exists(fallback)
    assert fallback.startswith(str(user_cache))
    assert any(fallback in r.getMessage() for r in caplog.records)
    assert build_feature_map(params).features == feature_map.features  # found there next time


def test_feature_map_with_nowhere_to_go_is_one_line_naming_data_root(tmp_path, user_cache,
                                                                     monkeypatch):
    data = tmp_path / "shared" / "ds"
    write_dataset(data)
    monkeypatch.setattr(fileio, "unwritable_reason", unwritable(tmp_path / "shared", user_cache))
    with pytest.raises(UserError) as error:
        build_feature_map(dataset_params(data))
    message = str(error.value)
    assert "\n" not in message
    assert str(data / "feature_map.json") in message and "data_root" in message


def test_a_file_named_like_the_cache_folder_falls_back(tmp_path, user_cache):
    data = tmp_path / "ds"
    write_dataset(data)
    (data / ".cache").write_text("not a folder")
    split = load_split(data / "train.parquet")
    assert len(split) == 50 and (data / ".cache").read_text() == "not a folder"
    assert any("meta.json" in files for _, _, files in os.walk(user_cache))


def test_chmod_read_only_folder_falls_back(tmp_path, user_cache):
    data = tmp_path / "ds"
    write_dataset(data)
    os.chmod(data, 0o555)
    try:
        if os.access(data, os.W_OK):
            pytest.skip("chmod does not stop this user (root): covered by the monkeypatched tests")
        split = load_split(data / "train.parquet")
        feature_map = build_feature_map(dataset_params(data))
    finally:
        os.chmod(data, 0o755)
    assert len(split) == 50 and feature_map.features
    assert not (data / ".cache").exists() and not (data / "feature_map.json").exists()


# --- 2. disk full / file-size limit --------------------------------------------------------

def test_disk_full_while_writing_is_one_line_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("previous")
    with pytest.raises(UserError) as error:
        with atomic_path(target) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(error.value) == f"cannot write {target}: no space left on device"
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["result.json"]


@pytest.mark.parametrize("code, reason", [(errno.EFBIG, "file too large"),
                                          (errno.EDQUOT, "disk quota exceeded"),
                                          (errno.EROFS, "read-only file system"),
                                          (errno.EACCES, "permission denied")])
def test_failed_rename_is_one_line_and_removes_the_temporary(tmp_path, monkeypatch, code, reason):
    target = tmp_path / "result.txt"
    target.write_text("previous")

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), src)

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(UserError, match=f"cannot write {target}: {reason}"):
        write_text_atomic(target, "new")
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["result.txt"]


def test_other_errors_inside_an_atomic_write_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "some input that is missing")
    assert os.listdir(tmp_path) == []


def _file_size_limit(limit):
    """preexec_fn: a file-size limit, with SIGXFSZ ignored so writes fail with EFBIG."""
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_synth_hitting_the_file_size_limit_is_one_line_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "ds"
    result = run_cli("synth", "--preset", "tiny", "--out", str(out), cwd=tmp_path,
                     preexec_fn=_file_size_limit(50_000))
    assert_one_error_line(result, "cannot write", str(out), "file too large")
    assert temporaries(out) == []
    assert ORACLE_FILE not in os.listdir(out)  # never looks finished


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_write_is_one_line_naming_the_file(tmp_path,
                                                                           tiny_dataset):
    """torch.save reports a failed write as a RuntimeError that names no cause: the file
    being written decides, not the message."""
    working_folder(tmp_path, tiny_dataset, scripts=["run_expid.py"])
    result = run([sys.executable, "run_expid.py", "--expid", TINY_EXPID, "--gpu", "-1"],
                 cwd=tmp_path, preexec_fn=_file_size_limit(1_500_000), env=_package_env())
    checkpoints = tmp_path / "checkpoints" / "MicroLens_synth_tiny"
    line = assert_one_error_line(result, f"cannot write {checkpoints / TINY_EXPID}.resume.pt",
                                 "file too large")
    assert line.endswith("the previous file is unchanged"), line
    assert temporaries(checkpoints) == []
    assert not (checkpoints / f"{TINY_EXPID}.resume.pt").exists()


def test_a_full_disk_while_caching_arrays_reads_without_the_cache(tmp_path, tiny_dataset):
    """``ndarray.tofile`` on a full disk raises an OSError without an errno: still a cache
    write that failed, so one warning line names the file and the split is read into memory."""
    data = tmp_path / "ds"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns(".cache"))
    script = ("from fuxictr_mmctr.data.loader import load_split\n"
              f"split = load_split({str(data / 'train.parquet')!r})\n"
              "print(len(split), split.from_cache, int(split.columns['item_seq'].sum()))")
    result = run([sys.executable, "-c", script], cwd=tmp_path,
                 preexec_fn=_file_size_limit(100_000),
                 env=_package_env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    expected = load_split(data / "train.parquet", cache_dir=False)
    assert result.stdout.split() == [str(len(expected)), "False",
                                     str(int(expected.columns["item_seq"].sum()))]
    warnings = [line for line in result.stderr.splitlines() if "Array cache" in line]
    assert len(warnings) == 1, result.stderr
    assert f"cannot write {data / '.cache'}" in warnings[0] and "item_seq.npy: disk full or " \
        "not writable" in warnings[0], warnings[0]
    assert temporaries(data) == [] and temporaries(tmp_path / "xdg") == []


def _package_env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


# --- 3. temporaries left by a killed write -------------------------------------------------

def test_next_write_removes_stale_temporaries_and_keeps_live_ones(tmp_path):
    stale = tmp_path / ".tmp-k1ll3d00result.json"
    live = tmp_path / ".tmp-wr1t1ngoresult.json"
    stale_folder = tmp_path / ".tmp-notafile"
    other = tmp_path / "old_notes.txt"
    for path in (stale, live, other):
        path.write_text("x")
    stale_folder.mkdir()
    for path in (stale, stale_folder, other):
        age(path, HOUR)
    age(live, fileio.STALE_AFTER_SECONDS - 60)  # a slow writer, still inside the window
    write_text_atomic(tmp_path / "result.json", "{}")
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert stale_folder.exists()  # atomic writes remove files only: folders are not theirs


def test_array_cache_removes_a_killed_runs_temporary_folder(tmp_path, user_cache):
    data = tmp_path / "ds"
    write_dataset(data)
    cache = data / ".cache"
    killed, running = cache / ".tmp-abc123", cache / ".tmp-def456"
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "item_seq.npy").write_bytes(b"partial")
    for path in (killed, killed / "item_seq.npy"):
        age(path, HOUR)
    load_split(data / "train.parquet")
    assert not killed.exists() and running.exists()


def test_stale_cleanup_never_follows_links(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    link = tmp_path / ".tmp-link"
    link.symlink_to(target)
    age(target, HOUR)
    assert fileio.remove_stale_temporaries(tmp_path, folders=True) == []
    assert (target / "keep.txt").exists() and link.is_symlink()


# --- 4. prediction.py output and input paths -----------------------------------------------

PREDICT = os.path.join(REPO, "prediction.py")


def _prediction_case(tmp_path, case):
    """Arguments and the culprit for one bad path; nothing here needs a trained model, since
    paths are checked before the model is loaded."""
    valid = os.path.join(tmp_path, "valid.parquet")
    open(valid, "wb").close()
    if case == "out is a folder":
        os.makedirs(tmp_path / "scores")
        return ["--data", valid, "--out", str(tmp_path / "scores")], "is a folder"
    if case == "out folder missing":
        return ["--data", valid, "--out", str(tmp_path / "no" / "s.csv")], "does not exist"
    if case == "out not csv":
        return ["--data", valid, "--out", str(tmp_path / "s.txt")], "s.txt"
    if case == "out parent is a file":
        (tmp_path / "afile").write_text("x")
        return ["--data", valid, "--out", str(tmp_path / "afile" / "s.csv")], "is a file"
    if case == "data is a folder":
        os.makedirs(tmp_path / "valid_dir")
        return ["--data", str(tmp_path / "valid_dir"), "--out", str(tmp_path / "s.csv")], \
            "valid_dir: is a folder"
    if case == "data is a pipe":  # reading it would block forever
        os.mkfifo(tmp_path / "pipe.parquet")
        return ["--data", str(tmp_path / "pipe.parquet"), "--out", str(tmp_path / "s.csv")], \
            "pipe.parquet: is not a regular file"
    if case == "submission zip is a folder":
        os.makedirs(tmp_path / "submission" / f"{TINY_EXPID}.zip")
        return [], f"{TINY_EXPID}.zip: is a folder"
    if case == "submission folder is a file":
        (tmp_path / "submission").write_text("x")
        return [], "submission is a file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["out is a folder", "out folder missing", "out not csv",
                                  "out parent is a file", "data is a folder", "data is a pipe",
                                  "submission zip is a folder", "submission folder is a file"])
def test_prediction_bad_paths_are_one_line_and_write_nothing(tmp_path, case):
    args, culprit = _prediction_case(tmp_path, case)
    before = snapshot(tmp_path)
    result = run([sys.executable, PREDICT, "--expid", TINY_EXPID, *args], cwd=tmp_path,
                 timeout=120)
    assert_one_error_line(result, culprit)
    assert snapshot(tmp_path) == before


# --- 5. synth --out onto a folder that holds something -------------------------------------

@pytest.fixture
def tiny_copy(tmp_path, tiny_dataset):
    folder = tmp_path / "ds"
    shutil.copytree(tiny_dataset, folder)
    return folder


def test_synth_refuses_a_folder_of_other_files_and_force_replaces_only_dataset_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "train.parquet").write_bytes(b"my own data")
    before = snapshot(out)
    refused = run_cli("synth", "--preset", "tiny", "--out", str(out), cwd=tmp_path)
    assert_one_error_line(refused, str(out), "notes.txt", "--force")
    assert snapshot(out) == before
    forced = run_cli("synth", "--preset", "tiny", "--out", str(out), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (out / "notes.txt").read_text() == "my notes"
    assert set(OUTPUT_FILES) <= set(os.listdir(out))


def test_synth_refuses_another_seed_and_leaves_it_whole(tmp_path, tiny_copy):
    before = snapshot(tiny_copy)
    result = run_cli("synth", "--preset", "tiny", "--seed", "7", "--out", str(tiny_copy),
                     cwd=tmp_path)
    assert_one_error_line(result, str(tiny_copy), "seed 2025", "seed 7")
    assert snapshot(tiny_copy) == before


def test_synth_same_preset_and_seed_is_up_to_date(tmp_path, tiny_copy):
    (tiny_copy / "feature_map.json").write_text("{}")  # derived files do not make it foreign
    before = snapshot(tiny_copy)
    result = run_cli("synth", "--preset", "tiny", "--seed", "2025", "--out", str(tiny_copy),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert snapshot(tiny_copy) == before


def test_synth_finishes_its_own_interrupted_run(tmp_path, tiny_copy):
    for name in ("train.parquet", "valid.parquet", "test.parquet", "truth.parquet", ORACLE_FILE):
        os.remove(tiny_copy / name)
    (tiny_copy / ".tmp-k1ll3d00train.parquet").write_bytes(b"half")
    result = run_cli("synth", "--preset", "tiny", "--out", str(tiny_copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "making it again" in result.stdout
    assert set(OUTPUT_FILES) <= set(os.listdir(tiny_copy))


@pytest.mark.parametrize("case", ["out is a file", "output name is a folder"])
def test_synth_paths_in_the_way_are_one_line(tmp_path, case):
    if case == "out is a file":
        out, culprit = tmp_path / "afile", "afile: is a file"
        out.write_text("x")
    else:
        out = tmp_path / "ds"
        (out / "valid.parquet").mkdir(parents=True)
        (out / "train.parquet").write_bytes(b"old")
        culprit = "valid.parquet: is a folder"
    before = snapshot(tmp_path)
    result = run_cli("synth", "--preset", "tiny", "--out", str(out), "--force", cwd=tmp_path)
    assert_one_error_line(result, culprit)
    assert snapshot(tmp_path) == before


def test_synth_unknown_preset_is_one_line_with_status_2(tmp_path):
    result = run_cli("synth", "--preset", "huge", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert_one_error_line(result, "unknown preset 'huge'")
    assert not (tmp_path / "x").exists()


def test_the_pipeline_still_remakes_a_stale_synthetic_dataset(tiny_copy):
    params = {"dataset_id": "tiny", "synthetic_preset": "tiny", "synthetic_seed": 7,
              **{f"{split}_data": str(tiny_copy / f"{split}.parquet")
                 for split in ("train", "valid", "test")},
              "item_info": str(tiny_copy / "item_info.parquet")}
    ensure_dataset(params)  # the generate(...) call it makes must not refuse the folder
    assert yaml.safe_load((tiny_copy / ORACLE_FILE).read_text())["seed"] == 7


def test_generate_refuses_only_when_asked(tmp_path, tiny_copy):
    with pytest.raises(UserError, match="seed 2025"):
        generate("tiny", seed=3, out_dir=str(tiny_copy), verbose=False, overwrite=False)
    assert generate("tiny", seed=3, out_dir=str(tiny_copy), verbose=False)["seed"] == 3


# --- 6. the tuner --------------------------------------------------------------------------

@pytest.fixture
def tuner_workdir(tmp_path, tiny_dataset):
    """A folder with the repository's config and run_param_tuner.py, and the tiny data."""
    work = tmp_path / "work dir"  # a space: every path is passed whole
    working_folder(work, tiny_dataset, scripts=["run_param_tuner.py", "run_expid.py"])
    (work / "tuner").mkdir()
    return work


GOOD_TUNER = {"base_config": "./config/", "base_expid": TINY_EXPID,
              "dataset_id": "MicroLens_synth_tiny"}
BAD_TUNERS = {
    "syntax error": ("base_expid: x\ntuner_space: {lr: [1, 2\n", "line 3"),
    "a list": ("- base_expid\n- tuner_space\n", "expected a mapping"),
    "tuner_space a list": (yaml.safe_dump({**GOOD_TUNER, "tuner_space": [1, 2]}),
                           "tuner_space must be a mapping"),
    "no base_expid": ("tuner_space: {epochs: 1}\n", "missing key 'base_expid'"),
    "empty file": ("", "empty"),
    "not utf-8": (b"base_expid: \xff\xfe\n", "not UTF-8"),
    "empty value list": (yaml.safe_dump({**GOOD_TUNER, "tuner_space": {"epochs": []}}),
                         "tuner_space.epochs is an empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD_TUNERS))
def test_malformed_tuner_yaml_is_one_line_with_the_file(tuner_workdir, case):
    text, culprit = BAD_TUNERS[case]
    config = tuner_workdir / "tuner" / "bad.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run([sys.executable, "run_param_tuner.py", "--config", str(config)],
                 cwd=tuner_workdir)
    assert_one_error_line(result, str(config), culprit)
    assert not (tuner_workdir / "tuner" / "bad").exists()


def test_tuner_config_that_is_a_folder_a_pipe_or_a_tag_that_matches_nothing(tuner_workdir):
    folder = tuner_workdir / "tuner" / "folder.yaml"
    folder.mkdir()
    result = run([sys.executable, "run_param_tuner.py", "--config", str(folder)],
                 cwd=tuner_workdir)
    assert_one_error_line(result, str(folder), "is a folder")
    pipe = tuner_workdir / "tuner" / "pipe.yaml"
    os.mkfifo(pipe)
    result = run([sys.executable, "run_param_tuner.py", "--config", str(pipe)],
                 cwd=tuner_workdir, timeout=120)
    assert_one_error_line(result, str(pipe), "is not a regular file")
    config = tuner_workdir / "tuner" / "grid.yaml"
    config.write_text(yaml.safe_dump({**GOOD_TUNER, "tuner_space": {"epochs": 1}}))
    result = run([sys.executable, "run_param_tuner.py", "--config", str(config), "--tag", "zzz"],
                 cwd=tuner_workdir)
    assert_one_error_line(result, "--tag zzz")


def test_tuner_reports_failed_points_and_exits_non_zero(tuner_workdir):
    config = tuner_workdir / "tuner" / "grid.yaml"
    config.write_text(yaml.safe_dump({**GOOD_TUNER,
                                      "tuner_space": {"learning_rate": [1.0e-3, 2.0e-3]}}))
    result = run([sys.executable, "run_param_tuner.py", "--config", str(config),
                  "--gpu", "99"], cwd=tuner_workdir)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2  # every point failed on a configuration error
    assert "tuner: 2 of 2 grid points failed:" in result.stderr
    reasons = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(reasons) == 2
    assert all(f"{TINY_EXPID}_00" in line and "(--gpu 99): exit 2: error: --gpu 99" in line
               for line in reasons), reasons


def test_grid_records_every_runs_status_and_last_line(tuner_workdir, monkeypatch):
    """Through fuxictr's own grid_search: a crash is status 1, its last stderr line kept."""
    script = tuner_workdir / "crash.py"
    script.write_text("import sys\n"
                      "expid = sys.argv[sys.argv.index('--expid') + 1]\n"
                      "if '_001_' in expid:\n"
                      "    sys.exit(0)\n"
                      "print('progress\\r50%', file=sys.stderr)\n"
                      "raise SystemExit('ValueError: boom in ' + sys.argv[2])\n")
    config = tuner_workdir / "tuner" / "grid.yaml"
    config.write_text(yaml.safe_dump({**GOOD_TUNER,
                                      "tuner_space": {"learning_rate": [1.0e-3, 2.0e-3]}}))
    monkeypatch.chdir(tuner_workdir)
    report = tuner.run_grid(str(config), [-1], script=str(script))
    failures = report.failures()
    assert [run.expid for run in report.runs] == report.expids and len(report.expids) == 2
    assert [run.expid for run in failures] == [report.expids[1]]
    assert failures[0].reason() == f"exit 1: ValueError: boom in {report.config_dir}"
    assert report.exit_status() == 1
    assert "1 of 2 grid points failed" in report.summary()


def test_report_exit_status_rules():
    class Ended:
        def __init__(self, code):
            self.returncode = code

    def report(*codes):
        runs = [tuner.GridRun(f"e{i}", "-1", Ended(code)) for i, code in enumerate(codes)]
        return tuner.GridReport("dir", [run.expid for run in runs], runs)

    assert report(0, 0).exit_status() == 0
    assert report(0, 2, 2).exit_status() == 2
    assert report(2, 1).exit_status() == 1
    killed = report(-signal.SIGKILL)
    assert killed.exit_status() == 1 and "killed by signal SIGKILL" in killed.summary()
    never = tuner.GridReport("dir", ["a", "b"], report(0).runs[:0])
    assert never.exit_status() == 1 and "a (--gpu -): never started" in never.summary()


# --- 7. the scorer and validate ------------------------------------------------------------

def _submission(path, rows=1000):
    text = "ID,Task2\n" + "".join(f"{i},{(i * 7919 % 1000) / 1000}\n" for i in range(rows))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("prediction.csv", text)
    return path


def _patch(path, edit):
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    edit(data, info)
    path.write_bytes(bytes(data))


def _flip_compressed_middle(data, info):
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(8):
        data[start + info.compress_size // 2 + k] ^= 0xFF


def _set_encrypted(data, info):
    data[info.header_offset + 6] |= 1
    data[data.rfind(b"PK\x01\x02") + 8] |= 1


def _unknown_method(data, info):
    data[info.header_offset + 8] = 99
    data[data.rfind(b"PK\x01\x02") + 10] = 99


def _damage_central_directory(data, info):
    start = data.rfind(b"PK\x01\x02")
    for k in range(4, 20):
        data[start + k] ^= 0x5A


def test_score_bit_flipped_zip_is_one_line_naming_it(tmp_path, tiny_dataset):
    path = _submission(tmp_path / "sub.zip")
    _patch(path, _flip_compressed_middle)
    result = run_cli("score", str(path), "--truth", tiny_dataset, cwd=tmp_path)
    assert_one_error_line(result, str(path), "damaged")


@pytest.mark.parametrize("damage, culprit", [
    (_set_encrypted, "encrypted"),
    (_unknown_method, "compression method"),
    (_damage_central_directory, "damaged"),
    ("truncate", "not a zip file"),
    ("folder", "is a folder"),
])
def test_score_damaged_submissions_are_one_line(tmp_path, tiny_dataset, capsys, damage, culprit):
    path = tmp_path / "sub.zip"
    if damage == "folder":
        path.mkdir()
    else:
        _submission(path)
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:-100])
        else:
            _patch(path, damage)
    with pytest.raises(SystemExit) as done:
        cli.main(["score", str(path), "--truth", tiny_dataset])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}") and culprit in err[0], err


def test_score_and_validate_with_a_file_for_a_folder(tmp_path, tiny_dataset, capsys):
    path = _submission(tmp_path / "sub.zip")
    afile = os.path.join(tiny_dataset, ORACLE_FILE)
    for argv in (["score", str(path), "--truth", afile], ["validate", afile],
                 ["validate", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and argv[-1] in err[0], err
