"""Interrupted, resumed and stuck runs: resume knows what it resumes, logs are kept, no hang."""
from __future__ import annotations

import os
import time

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.experiment import run_experiment
from fuxictr_mmctr.training.trainer import Trainer
from tests.builders import inside, working_folder

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
