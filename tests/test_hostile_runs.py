"""Interrupted, resumed and stuck runs: resume knows what it resumes, logs are kept, no hang."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.experiment import run_experiment
from fuxictr_mmctr.training.trainer import Trainer
from tests.builders import REPO, inside, working_folder

TINY = "Transformer_DCN_MicroLens_tiny"


@pytest.fixture
def workdir(tmp_path, tiny_dataset):
    return working_folder(tmp_path, tiny_dataset)


def run_in(workdir, **kwargs):
    with inside(workdir):
        return run_experiment("./config/", TINY, gpu=-1, **kwargs)


def log_of(workdir):
    return (workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.log").read_text()


def test_a_new_run_killed_early_does_not_resume_the_previous_finished_run(workdir, monkeypatch):
    finished = run_in(workdir)
    resume_state = workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.resume.pt"
    assert resume_state.exists()

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the new run dies before its first evaluation point

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            run_in(workdir)
    assert not resume_state.exists()  # the finished run's state is not this run's
    with pytest.raises(UserError, match="no resume state at .*: this run has nothing to "
                                        "resume") as error:
        run_in(workdir, resume=True)
    # Logs are appended: all three runs are in the one log, the refusal included.
    log = log_of(workdir)
    assert log.count(f"======== {TINY}") == 3
    assert f"error: {error.value}" in log
    assert f"AUC: {finished['valid']['AUC']:.6f}" in log


def test_resume_after_the_config_changed_is_refused(workdir, monkeypatch):
    calls = {"epochs": 0}
    train_epoch = Trainer._train_epoch

    def dies_in_epoch_two(self, data, epoch, start_batch):
        calls["epochs"] += 1
        if epoch == 1:
            raise KeyboardInterrupt
        train_epoch(self, data, epoch, start_batch)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_epoch", dies_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            run_in(workdir)
    model_file = workdir / "config" / "model_config" / "Transformer_DCN.yaml"
    text = model_file.read_text()
    model_file.write_text(text.replace("    learning_rate: 2.0e-3\n",
                                       "    learning_rate: 3.0e-3\n", 1))
    with pytest.raises(UserError, match="the interrupted run had learning_rate=0.002, this run "
                                        "has learning_rate=0.003"):
        run_in(workdir, resume=True)
    model_file.write_text(text)
    resumed = run_in(workdir, resume=True)  # the same config resumes and finishes
    assert resumed["valid"]["AUC"] > 0.6
    assert "Resume from" in log_of(workdir)


def _stuck_worker(rank, init_file, out_dir):
    from fuxictr_mmctr.training import distributed

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_MASTER_PORT"])
    group, _ = distributed.start(-1, timeout_minutes=0.05)  # 3 s
    outcome = "finished"
    try:
        with distributed.explain_timeouts(group, 0.05):
            if rank == 1:
                time.sleep(12)  # stopped, not dead: it never reaches the barrier in time
            distributed.barrier()
    except UserError as error:
        outcome = str(error)
    except RuntimeError as error:
        outcome = f"unexplained: {error}"
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(outcome)


def test_a_stuck_process_ends_the_job_within_the_timeout(tmp_path, monkeypatch):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("TEST_MASTER_PORT", str(probe.getsockname()[1]))
    started = time.monotonic()
    mp.spawn(_stuck_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    waited = time.monotonic() - started
    rank0 = (tmp_path / "rank0.txt").read_text()
    assert rank0 == ("process 0 of 2: no answer from the other processes within 0.05 min (one "
                     "of them is stuck or died); stopping"), rank0
    assert waited < 60


def test_the_distributed_timeout_must_be_positive(monkeypatch):
    from fuxictr_mmctr.training import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="timeout must be > 0 minutes, got 0"):
        distributed.start(-1, timeout_minutes=0)
    assert not torch.distributed.is_initialized()


def test_a_torchrun_job_logs_the_timeout_in_force_and_how_to_change_it():
    from fuxictr_mmctr.pipeline.experiment import distributed_summary
    from fuxictr_mmctr.training.distributed import ProcessGroup

    line = distributed_summary(ProcessGroup(rank=0, world_size=2), -1, 10.0)
    assert line == ("Distributed: 2 processes (CPU, gloo); a process that hears nothing from "
                    "the others for 10 min stops the job (change it with run_expid.py "
                    "--dist-timeout MINUTES)")


def test_under_torchrun_a_config_error_is_printed_once(tmp_path):
    import subprocess
    import sys

    import yaml

    working_folder(tmp_path, scripts=["run_expid.py"])
    (tmp_path / "config" / "model_config" / "Hostile.yaml").write_text(yaml.safe_dump(
        {"Hostile": {"model": "Transformer_DCN", "dataset_id": "MicroLens_synth_tiny",
                     "batch_sise": 128}}))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "run_expid.py", "--expid", "Hostile", "--gpu", "-1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: expid Hostile: unknown key 'batch_sise'; did you mean batch_size?"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "checkpoints").exists()


# --- two runs of one expid at once -----------------------------------------------------------

def _env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wait_for(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_run_of_a_running_expid_is_refused_naming_the_first(tmp_path, tiny_dataset):
    """Two processes, one expid: the second stops with one line naming the first's PID and
    host; the first finishes with its own result, and nobody borrows a checkpoint."""
    workdir = working_folder(tmp_path, tiny_dataset, scripts=["run_expid.py"])
    lock = workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.lock"
    command = [sys.executable, "run_expid.py", "--expid", TINY, "--gpu", "-1"]
    first = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().startswith(f"{first.pid} "))
        os.kill(first.pid, signal.SIGSTOP)  # the first run is mid-way, holding its files
        second = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                timeout=300, env=_env())
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first_out, first_err = first.communicate(timeout=300)
    assert "Traceback" not in second.stderr, second.stderr
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, second.stderr
    assert errors[0].startswith(f"error: expid {TINY} is already running (PID {first.pid} on "
                                f"host {socket.gethostname()}, started "), errors[0]
    assert "result " not in second.stdout
    assert first.returncode == 0, first_err[-3000:]
    assert len([line for line in first_out.splitlines() if line.startswith("result ")]) == 1
    assert not lock.exists()  # released when the first run ended


def test_a_killed_runs_lock_is_taken_over_with_one_line(tmp_path):
    from fuxictr_mmctr.pipeline import run_lock

    params = {"model_root": str(tmp_path), "dataset_id": "D", "model_id": "E"}
    path = run_lock.lock_path(params)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from fuxictr_mmctr.pipeline import run_lock\n"
         f"held = run_lock.acquire({path!r}, 'E')\nprint('held', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"expid E is already running \\(PID {holder.pid} "
                                            f"on host {socket.gethostname()}, started "):
            with run_lock.hold_run_lock(params):
                pass
    finally:
        holder.kill()  # SIGKILL: no chance to release the lock or remove its file
        holder.wait()
    assert os.path.exists(path)
    with run_lock.hold_run_lock(params) as taken_over:
        assert taken_over.startswith(f"Run lock {path}: taken over from PID {holder.pid} on "
                                     f"host {socket.gethostname()}")
        with open(path, encoding="utf-8") as handle:
            assert handle.read().startswith(f"{os.getpid()} ")
    assert not os.path.exists(path)
