"""Which run a file belongs to: the resume state of an interrupted ``fit``, and the record of the
configuration that wrote a best-weights file.

A run is identified by its *signature*: the plain configuration values the model was built
with (``MultimodalRankModel.run_signature``: model, hyperparameters, trainer keys, and the data
files' sizes and modification times once the pipeline adds them).

* ``<model_id>.resume.pt`` (:func:`write_state`, :func:`restore_state`): model and optimizer
  state, counters, early-stopping state, learning rates and every rank's RNG state, written at
  each evaluation point, so that ``fit(..., resume=True)`` ends exactly where an uninterrupted
  run ends. It is refused, with one line naming the first difference, when the data or a key
  outside :data:`RESUMABLE_CHANGES` changed.
* ``<model_id>.model.config.json`` (:func:`write_weights_record`,
  :func:`check_weights_record`): the signature of the run that wrote the best weights, so that
  a prediction never silently uses weights an earlier configuration trained (a new run killed
  before its first evaluation leaves the old weights file in place).
"""
from __future__ import annotations

import json
import logging
import os

from fuxictr_mmctr.errors import UserError, first_line
from fuxictr_mmctr.fileio import atomic_path
from fuxictr_mmctr.training import checkpoint as ckpt
from fuxictr_mmctr.training import distributed

#: Configuration keys that may change between an interrupted run and its ``--resume``: they
#: do not change what has been trained so far.
RESUMABLE_CHANGES = ("epochs", "verbose", "gpu", "eval_batch_size", "num_workers", "debug_mode",
                     "compile", "loader")
#: Keys that may differ between the run that wrote the weights and a prediction with them:
#: how to run, and which data files (a prediction reads other rows than training did).
PREDICTION_MAY_CHANGE = (*RESUMABLE_CHANGES, "data_files", "test_data", "save_resume_state")
WEIGHTS_RECORD_SUFFIX = ".config.json"


# ---------------------------------------------------------------------- resume state
def write_state(trainer, epoch: int, batches_done: int) -> None:
    """Write ``trainer``'s resume state after ``batches_done`` batches of ``epoch`` (rank 0
    writes; every rank's RNG state is gathered into it)."""
    rng_per_rank = distributed.all_gather_objects(ckpt.capture_rng_state())
    if not distributed.is_main():
        return
    state = {
        "format": ckpt.RESUME_FORMAT,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "epoch": epoch,
        "batches_done": batches_done,
        "global_step": trainer.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "eval_every": trainer.eval_every,
        "accumulation_steps": int(trainer.config.accumulation_steps),
        "early_stopping": trainer.stopper.state_dict(),
        "checkpoint_saved": trainer.checkpoint_saved,
        "lr": [group["lr"] for group in trainer.optimizer.param_groups],
        "rng": rng_per_rank,
        "config": ckpt.plain(trainer.run_signature),
    }
    if trainer.scaler.is_enabled():
        state["grad_scaler"] = trainer.scaler.state_dict()
    ckpt.save_atomic(state, trainer.resume_checkpoint)


def restore_state(trainer) -> tuple[int, int]:
    """Restore ``trainer`` from its resume state; returns ``(epoch, batch)`` to continue from."""
    path = trainer.resume_checkpoint
    if not os.path.exists(path):
        raise UserError(f"no resume state at {path}: this run has nothing to resume (its "
                        f"last run finished before its first evaluation point, or was "
                        f"started afresh since); run without --resume to train from the "
                        f"start")
    state = ckpt.load_file(path, "resume state")
    if not isinstance(state, dict) or state.get("format") != ckpt.RESUME_FORMAT:
        raise UserError(f"{path}: not a resume state of format {ckpt.RESUME_FORMAT}")
    check_same_run(path, state, trainer)
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scaler.is_enabled() and "grad_scaler" in state:
            trainer.scaler.load_state_dict(state["grad_scaler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(f"{path}: does not match this model ({first_line(error)})") from None
    trainer.stopper.load_state_dict(state["early_stopping"])
    trainer.global_step = state["global_step"]
    trainer.checkpoint_saved = state["checkpoint_saved"]
    rng_states = state["rng"]
    ckpt.restore_rng_state(rng_states[min(distributed.rank(), len(rng_states) - 1)])
    epoch, batches_done = state["epoch"], state["batches_done"]
    if distributed.is_main():
        logging.info(f"Resume from {path}: epoch={epoch + 1}, batch={batches_done}, "
                     f"global step={trainer.global_step}")
    if batches_done >= trainer.steps_per_epoch:
        return epoch + 1, 0
    return epoch, batches_done


def check_same_run(path: str, state: dict, trainer) -> None:
    """A resume state of another configuration (or other data sizes) is refused, one line."""
    for key, now in (("steps_per_epoch", trainer.steps_per_epoch),
                     ("eval_every", trainer.eval_every),
                     ("accumulation_steps", int(trainer.config.accumulation_steps))):
        if state[key] != now:
            raise UserError(f"{path}: written with {key}={state[key]}, this run has {now}; "
                            f"resume needs the same data and settings")
    before, now = state.get("config") or {}, ckpt.plain(trainer.run_signature)
    before_files, now_files = before.get("data_files") or {}, now.get("data_files") or {}
    if before_files != now_files:
        changed = sorted(name for name in set(before_files) | set(now_files)
                         if before_files.get(name) != now_files.get(name))
        raise UserError(f"{path}: the data changed since the interrupted run "
                        f"({', '.join(changed)}: other size or modification time); "
                        f"--resume continues the same data (run without --resume to train "
                        f"from the start)")
    key = first_difference(before, now, ignore=RESUMABLE_CHANGES)
    if key is not None:
        raise UserError(f"{path}: the interrupted run had {key}={before.get(key)!r}, this "
                        f"run has {key}={now.get(key)!r}; --resume continues the same "
                        f"configuration (run without --resume to train from the start)")


def first_difference(before: dict, now: dict, ignore=()) -> str | None:
    """The first key (in sorted order) whose value differs between two signatures, or ``None``."""
    for key in sorted(set(before) | set(now)):
        if key not in ignore and before.get(key) != now.get(key):
            return key
    return None


# ---------------------------------------------------------------------- weights record
def weights_record_path(checkpoint: str) -> str:
    """``<dir>/<model_id>.model.config.json`` for the weights file ``<dir>/<model_id>.model``."""
    return checkpoint + WEIGHTS_RECORD_SUFFIX


def write_weights_record(checkpoint: str, signature: dict) -> None:
    """Record which configuration wrote ``checkpoint`` (called with each weights write)."""
    with atomic_path(weights_record_path(checkpoint)) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            json.dump(ckpt.plain(signature), handle, indent=1, sort_keys=True, default=str)


def check_weights_record(checkpoint: str, signature: dict) -> None:
    """Refuse weights that another configuration wrote: one line naming the first difference.

    A weights file without a record (written by another tool, or copied alone) is used with
    one warning line: what wrote it cannot be checked.
    """
    path = weights_record_path(checkpoint)
    if not os.path.exists(path):
        logging.warning(f"{checkpoint}: no record of the configuration that wrote these "
                        f"weights ({os.path.basename(path)} is missing); using them unchecked")
        return
    try:
        with open(path, encoding="utf-8") as handle:
            before = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable weights record ({error})") from None
    now = json.loads(json.dumps(ckpt.plain(signature), default=str))
    key = first_difference(before, now, ignore=PREDICTION_MAY_CHANGE)
    if key is not None:
        raise UserError(f"{checkpoint}: these weights were trained with {key}="
                        f"{before.get(key)!r}, this configuration has {key}={now.get(key)!r}; "
                        f"retrain the expid (python run_expid.py --expid ...) or restore "
                        f"its configuration")
