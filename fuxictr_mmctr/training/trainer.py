"""Trainer: the one training loop, evaluation and prediction every model shares.

A model only says how a batch becomes a logit (``model(batch) -> {"logit": (B, 1), ...}``);
everything else lives here:

* the loss is BCE-with-logits on the float32 logit (never on a probability: a probability
  saturates at exactly 1.0 in float32 and cannot be trained under bf16 autocast), plus the
  model's ``regularization_loss()`` when it has one (FuxiCTR's embedding/net regularisers);
* no host sync per step: the training loss is summed on the device and read only at
  evaluation points, where a non-finite sum stops training with a :class:`UserError` before
  anything is saved;
* gradient accumulation (``accumulation_steps``) and clipping (``max_gradient_norm``);
* predictions stay on the device until one transfer per column; probabilities are
  ``sigmoid(logit)`` computed in float64 on the host, and metrics come from
  :mod:`fuxictr_mmctr.training.metrics` (vectorised AUC, gAUC, logloss);
* atomic checkpoints, a best-weights file even when no evaluation improved, and a resume
  state at every evaluation point that records the configuration it belongs to, so
  ``fit(..., resume=True)`` ends exactly where an uninterrupted run ends, and refuses to
  resume a run whose configuration changed;
* DistributedDataParallel (:meth:`Trainer.wrap_distributed`): each rank trains on its shard
  with its own random stream, item tables and other constant buffers are never re-sent, and
  predictions, metrics and the early-stop decision are shared through
  :mod:`fuxictr_mmctr.training.distributed`; only rank 0 writes files and logs;
* speed switches (:mod:`fuxictr_mmctr.training.speed`): ``precision`` (autocast of the training
  forward, a gradient scaler for fp16), ``compile`` (torch.compile with dynamic batch shapes),
  ``tf32`` and ``fused_optimizer`` on CUDA.

Batches are dicts of tensors already on the model's device (``fuxictr_mmctr.data.batches``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fuxictr_mmctr.data.schema import LABEL, USER_ID
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import checkpoint as ckpt
from fuxictr_mmctr.training import distributed, speed
from fuxictr_mmctr.training.early_stopping import EarlyStopping
from fuxictr_mmctr.training.metrics import evaluate_metrics

#: Seconds between progress-bar refreshes (each refresh costs a little host time).
PROGRESS_INTERVAL_S = 1.0
#: Loss names accepted for the click task; all mean BCE-with-logits on the model's logit.
BCE_LOSSES = ("binary_crossentropy", "binary_cross_entropy", "bce",
              "binary_cross_entropy_with_logits")
#: Configuration keys that may change between an interrupted run and its ``--resume``: they
#: do not change what has been trained so far.
RESUMABLE_CHANGES = ("epochs", "verbose", "gpu", "eval_batch_size", "num_workers", "debug_mode",
                     "compile", "loader")
#: Config fields for which ``null`` means something (no evaluation steps, no clipping, ...).
_NULLABLE = ("eval_steps", "max_gradient_norm", "group_id", "seed")


@dataclass
class TrainerConfig:
    """How to train; every field is a FuxiCTR model-config key of the same name."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "binary_crossentropy"
    metrics: tuple = ("logloss", "AUC")
    monitor: object = "AUC"
    monitor_mode: str = "max"
    early_stop_patience: int = 2
    eval_steps: int | None = None
    save_best_only: bool = True
    reduce_lr_on_plateau: bool = True
    lr_decay_factor: float = 0.1
    max_gradient_norm: float | None = 10.0
    accumulation_steps: int = 1
    save_resume_state: bool = True
    verbose: int = 1
    group_id: str | None = None
    seed: int | None = None
    precision: str = "fp32"
    compile: bool = False
    tf32: bool = True
    fused_optimizer: bool = True

    @classmethod
    def from_params(cls, params: dict) -> "TrainerConfig":
        """The trainer's fields out of a FuxiCTR params dict (other keys are not its business)."""
        values = {name: params[name] for name in cls.keys()
                  if name in params and (params[name] is not None or name in _NULLABLE)}
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def check(self) -> None:
        if self.eval_steps is not None and int(self.eval_steps) < 1:
            raise UserError(f"eval_steps must be a positive integer or null, got {self.eval_steps}")
        if int(self.accumulation_steps) < 1:
            raise UserError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if str(self.loss) not in BCE_LOSSES:
            raise UserError(f"loss {self.loss!r} is not supported: the click task trains with "
                            f"binary cross-entropy on logits ({', '.join(BCE_LOSSES[:1])})")
        if not 0 < float(self.lr_decay_factor) <= 1:
            raise UserError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.monitor_mode not in ("max", "min"):
            raise UserError(f"monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.precision not in speed.PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(speed.PRECISIONS)}, got "
                            f"{self.precision!r}")
        for key in ("compile", "tf32", "fused_optimizer"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"{key} must be True or False, got {getattr(self, key)!r}")


def optimizer_class(name) -> type:
    """The ``torch.optim`` class an optimizer name means (``adam`` -> ``Adam``); UserError else."""
    class_name = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD",
                  "adagrad": "Adagrad", "rmsprop": "RMSprop"}.get(str(name).lower(), str(name))
    found = getattr(torch.optim, class_name, None)
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise UserError(f"optimizer {name!r} is not a torch.optim optimizer (e.g. adam, adamw, sgd)")
    return found


def make_optimizer(name, parameters, learning_rate: float, **options) -> torch.optim.Optimizer:
    """``torch.optim.<name>`` over the trainable ``parameters`` (``options``: e.g. ``fused``)."""
    return optimizer_class(name)([p for p in parameters if p.requires_grad],
                                 lr=float(learning_rate), **options)


class Trainer:
    """Trains, evaluates and predicts with ``model`` (an ``nn.Module`` returning logits).

    Args:
        model: ``model(batch) -> {"logit": (B, 1)}``; its ``regularization_loss()`` (optional)
            is added to the loss.
        config: :class:`TrainerConfig`.
        checkpoint: path of the best-weights file (``<dir>/<model_id>.model``); the resume state
            is written beside it.
        device: where the model and the batches live.
        run_signature: what this run is (plain config values); stored in the resume state and
            compared on resume.
    """

    def __init__(self, model: nn.Module, config: TrainerConfig, checkpoint: str,
                 device: torch.device, run_signature: dict | None = None):
        self.model = model
        self.config = config
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.run_signature = dict(run_signature or {})
        self.autocast_dtype = speed.autocast_dtype(config.precision, self.device)
        self.scaler = speed.grad_scaler(self.device, self.autocast_dtype)
        speed.set_tf32(self.device, config.tf32)
        self.optimizer = make_optimizer(
            config.optimizer, model.parameters(), config.learning_rate,
            **speed.optimizer_options(optimizer_class(config.optimizer), self.device,
                                      config.fused_optimizer))
        self.compiling = bool(config.compile) and self._compile_available()
        self._compiled = {}
        self.ddp_module = None
        self.stopper = EarlyStopping(config.monitor, config.monitor_mode,
                                     config.early_stop_patience)
        self.valid_gen = None
        self.global_step, self.epoch = 0, 0
        self.checkpoint_saved = False
        #: Called as ``listener(logs, epochs_done)`` after each evaluation of :meth:`fit`
        #: (``epochs_done`` e.g. 1.5 mid-epoch 2); a listener may raise to stop training.
        self.evaluation_listeners = []
        self._reset_loss_sum()

    @property
    def resume_checkpoint(self) -> str:
        """``<model_root>/<dataset_id>/<model_id>.resume.pt``."""
        return ckpt.resume_path(self.checkpoint)

    # ------------------------------------------------------------------ distributed
    def wrap_distributed(self, **ddp_kwargs) -> None:
        """Train through ``DistributedDataParallel`` (process group already initialised).

        Non-persistent buffers (the item table, constant masks) are identical on every rank by
        construction: DDP is told to ignore them, so they are not broadcast before each forward
        (the MicroLens item table alone is ~51 MB). Each rank then gets its own random stream
        (``seed + rank``), so dropout masks differ between ranks.
        """
        constant_buffers = [
            f"{module_name}.{name}" if module_name else name
            for module_name, module in self.model.named_modules()
            for name in getattr(module, "_non_persistent_buffers_set", ())]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self.model, constant_buffers)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp_module = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids,
                                                              **ddp_kwargs)
        if self.config.seed is not None:
            seed_all(distributed.per_rank_seed(self.config.seed))

    # ------------------------------------------------------------------ training
    def fit(self, data_generator, epochs: int = 1, validation_data=None, resume: bool = False):
        """Train ``epochs`` epochs, evaluating every ``eval_steps`` batches (default: each epoch).

        ``resume=True`` continues from :attr:`resume_checkpoint` when it exists: mid-epoch resume
        skips the batches of that epoch already trained on (the loader's order is fixed by
        ``set_epoch``). Ends with the best weights loaded.
        """
        self.valid_gen = validation_data
        self.steps_per_epoch = len(data_generator)
        if self.steps_per_epoch == 0:
            raise UserError("the training data yields no batches")
        self.eval_every = int(self.config.eval_steps or self.steps_per_epoch)
        self.stopper = EarlyStopping(self.config.monitor, self.config.monitor_mode,
                                     self.config.early_stop_patience)
        self.global_step, self.epoch = 0, 0
        self.checkpoint_saved = False
        self._reset_loss_sum()
        start_epoch, start_batch = (self._load_resume_state() if resume else (0, 0))
        self.optimizer.zero_grad(set_to_none=True)
        self._log(f"Start training: {self.steps_per_epoch} batches/epoch")
        self._log(f"Speed: precision={self.config.precision}, compile={self.compiling}, "
                  f"tf32={self.config.tf32 and self.device.type == 'cuda'}, fused optimizer="
                  f"{bool(self.optimizer.defaults.get('fused'))}")
        for epoch in range(start_epoch, int(epochs)):
            if self.stopper.stopped:
                break
            self._log(f"************ Epoch={epoch + 1} start ************")
            self._train_epoch(data_generator, epoch, start_batch if epoch == start_epoch else 0)
            if not self.stopper.stopped:
                self._log(f"************ Epoch={epoch + 1} end ************")
        self._finish_training()

    def _train_epoch(self, data_generator, epoch: int, start_batch: int) -> None:
        """One epoch from batch ``start_batch``; stops early when the stopper says so."""
        self.epoch = epoch
        if hasattr(data_generator, "set_epoch"):
            data_generator.set_epoch(epoch)
        self.model.train()
        steps, group = self.steps_per_epoch, int(self.config.accumulation_steps)
        batches = iter(data_generator)
        if start_batch:
            batches = itertools.islice(batches, start_batch, None)  # already trained on
        batches = tqdm(batches, total=steps, initial=start_batch, file=sys.stdout,
                       disable=self.config.verbose == 0 or not distributed.is_main(),
                       mininterval=PROGRESS_INTERVAL_S, desc=f"Epoch {epoch + 1}")
        eval_due = False
        for batch_index, batch in enumerate(batches, start=start_batch):
            group_start = batch_index - batch_index % group
            group_size = min(group, steps - group_start)  # the epoch's last group may be short
            group_ends = batch_index + 1 - group_start >= group_size
            self._accumulate_gradients(batch, 1.0 / group_size, sync=group_ends)
            self.global_step += 1
            eval_due |= self.global_step % self.eval_every == 0
            if not group_ends:
                continue  # mid-group: evaluate only where no gradient is pending
            self._optimizer_step()
            if eval_due:
                eval_due = False
                self._evaluation_point(epoch, batch_index + 1, batches)
                if self.stopper.stopped:
                    break
        batches.close()

    def train_step(self, batch: dict) -> None:
        """One optimizer step on one batch (forward, backward, clip, step), as ``fit`` makes
        them; its loss joins the device-side sum. For benchmarks and custom loops."""
        self.model.train()
        self._accumulate_gradients(batch, 1.0)
        self._optimizer_step()

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """BCE-with-logits of one batch in float32, plus the model's regulariser and, in training,
        the auxiliary loss a model may return (``{"aux_loss": scalar}``): a scalar.

        The forward runs under autocast at the config's ``precision`` (and compiled with
        ``compile``); the loss is computed on the float32 logit outside it.
        """
        with speed.autocast(self.device, self.autocast_dtype):
            output = self.forward(batch, training=True)
        loss = F.binary_cross_entropy_with_logits(output["logit"].float().reshape(-1),
                                                  labels_of(batch))
        if self.model.training and output.get("aux_loss") is not None:
            loss = loss + output["aux_loss"].float()
        regularizer = getattr(self.model, "regularization_loss", None)
        return loss + regularizer() if regularizer is not None else loss

    def _accumulate_gradients(self, batch: dict, scale: float, sync: bool = True) -> None:
        """Forward and backward of one batch; its loss is added to the device-side sum.

        Under DDP, ``sync=False`` (a batch inside an accumulation group) skips the gradient
        all-reduce: only the group's last backward exchanges gradients.
        """
        skip_all_reduce = self.ddp_module is not None and not sync
        with self.ddp_module.no_sync() if skip_all_reduce else contextlib.nullcontext():
            loss = self.compute_loss(batch)
            self.scaler.scale(loss * scale).backward()
        self._loss_sum += loss.detach()
        self._loss_batches += 1

    def _optimizer_step(self) -> None:
        """Clip, step and clear; with fp16 the scaler unscales first and skips steps whose
        gradients overflowed."""
        if self.config.max_gradient_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_gradient_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ forward (compile)
    def forward(self, batch: dict, training: bool):
        """The model's output for ``batch``: through DDP in training when distributed, through
        ``torch.compile`` when ``compile`` is on (:class:`speed.CompiledForward`)."""
        module = self.ddp_module if training and self.ddp_module is not None else self.model
        if not self.compiling:
            return module(batch)
        compiled = self._compiled.get(id(module))
        if compiled is None:
            compiled = self._compiled[id(module)] = speed.CompiledForward(module)
        try:
            return compiled(batch)
        except speed.compile_errors() as error:
            self.compiling = False
            self._warn(f"compile: torch.compile failed ({speed.first_line(error)}); this run "
                       f"goes on uncompiled")
            return module(batch)

    def _compile_available(self) -> bool:
        """Whether torch.compile can run here; if not, one warning line and ``False``."""
        reason = speed.compile_unavailable(self.device)
        if reason is not None:
            self._warn(f"compile: True is not supported here ({reason}); this run trains "
                       f"uncompiled")
        return reason is None

    def lr_decay(self, factor: float | None = None, min_lr: float = 1e-6) -> float:
        """Multiply every learning rate by ``factor`` (default: the config's
        ``lr_decay_factor``), not below ``min_lr``; returns the new rate."""
        factor = float(self.config.lr_decay_factor if factor is None else factor)
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, min_lr)
        return self.optimizer.param_groups[0]["lr"]

    def _evaluation_point(self, epoch: int, batches_done: int, progress) -> None:
        """Log the train loss, evaluate, checkpoint, early-stop, save the resume state."""
        train_loss = self._read_train_loss(epoch)
        self._log(f"Train loss: {train_loss:.6f}")
        progress.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
        if self.valid_gen is not None:
            self._log(f"Evaluation @epoch {epoch + 1} - batch {batches_done}: ")
            logs = self.evaluate(self.valid_gen, metrics=self.stopper.metrics)
            self._checkpoint_and_earlystop(logs, epoch)
            for listener in self.evaluation_listeners:
                listener(logs, epoch + batches_done / self.steps_per_epoch)
            self.model.train()
        if self.config.save_resume_state:
            self._write_resume_state(epoch, batches_done)

    def _read_train_loss(self, epoch: int) -> float:
        """Mean loss since the last read (one host sync); non-finite -> UserError.

        Distributed: summed over ranks first, so a NaN on any rank stops every rank.
        """
        batches = max(self._loss_batches, 1) * distributed.world_size()
        total = float(distributed.all_reduce_sum(self._loss_sum).item())
        first_step = self.global_step - self._loss_batches + 1
        self._reset_loss_sum()
        if not np.isfinite(total):
            raise UserError(
                f"training loss became {total} between global steps {first_step} and "
                f"{self.global_step} (epoch {epoch + 1}); training stopped, best checkpoint "
                f"{self.checkpoint} left unchanged (lower the learning rate or check the data)")
        return total / batches

    def _reset_loss_sum(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_batches = 0

    def _checkpoint_and_earlystop(self, logs: dict, epoch: int) -> None:
        """FuxiCTR's rules: save on improvement, decay lr on plateau, stop after patience."""
        mode = self.config.monitor_mode
        decision = self.stopper.update(logs)
        if decision.improved:
            if self.config.save_best_only:
                self._log(f"Save best model: monitor({mode})={decision.value:.6f}")
                self.save_weights(self.checkpoint)
                self.checkpoint_saved = True
        else:
            self._log(f"Monitor({mode})={decision.value:.6f} STOP!")
            if self.config.reduce_lr_on_plateau:
                self._log(f"Reduce learning rate on plateau: {self.lr_decay():.6f}")
        if decision.stop:
            self._log(f"********* Epoch={epoch + 1} early stop *********")
        if not self.config.save_best_only:
            self.save_weights(self.checkpoint)
            self.checkpoint_saved = True

    def _finish_training(self) -> None:
        """Load the best weights, or save the final ones when no evaluation saved any."""
        if self._loss_batches:
            self._read_train_loss(self.epoch)  # never keep weights trained on a diverged loss
        self._log("Training finished.")
        if self.checkpoint_saved:
            distributed.barrier()
            self._log(f"Load best model: {self.checkpoint}")
            self.load_weights(self.checkpoint)
        else:
            self._log(f"No evaluation saved a checkpoint; saving the final weights: "
                      f"{self.checkpoint}")
            self.save_weights(self.checkpoint)
            distributed.barrier()

    # ------------------------------------------------------------------ resume state
    def _write_resume_state(self, epoch: int, batches_done: int) -> None:
        rng_per_rank = distributed.all_gather_objects(ckpt.capture_rng_state())
        if not distributed.is_main():
            return
        state = {
            "format": ckpt.RESUME_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "batches_done": batches_done,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "eval_every": self.eval_every,
            "accumulation_steps": int(self.config.accumulation_steps),
            "early_stopping": self.stopper.state_dict(),
            "checkpoint_saved": self.checkpoint_saved,
            "lr": [group["lr"] for group in self.optimizer.param_groups],
            "rng": rng_per_rank,
            "config": ckpt.plain(self.run_signature),
        }
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        ckpt.save_atomic(state, self.resume_checkpoint)

    def _load_resume_state(self) -> tuple[int, int]:
        """Restore a resume state; returns ``(epoch, batch)`` to continue from."""
        path = self.resume_checkpoint
        if not os.path.exists(path):
            raise UserError(f"no resume state at {path}: this run has nothing to resume (its "
                            f"last run finished before its first evaluation point, or was "
                            f"started afresh since); run without --resume to train from the "
                            f"start")
        state = ckpt.load_file(path, "resume state")
        if not isinstance(state, dict) or state.get("format") != ckpt.RESUME_FORMAT:
            raise UserError(f"{path}: not a resume state of format {ckpt.RESUME_FORMAT}")
        self._check_same_run(path, state)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler.is_enabled() and "grad_scaler" in state:
                self.scaler.load_state_dict(state["grad_scaler"])
        except (RuntimeError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise UserError(f"{path}: does not match this model ({first_line})") from None
        self.stopper.load_state_dict(state["early_stopping"])
        self.global_step = state["global_step"]
        self.checkpoint_saved = state["checkpoint_saved"]
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[min(distributed.rank(), len(rng_states) - 1)])
        epoch, batches_done = state["epoch"], state["batches_done"]
        self._log(f"Resume from {path}: epoch={epoch + 1}, batch={batches_done}, "
                  f"global step={self.global_step}")
        if batches_done >= self.steps_per_epoch:
            return epoch + 1, 0
        return epoch, batches_done

    def _check_same_run(self, path: str, state: dict) -> None:
        """A resume state of another configuration (or other data sizes) is refused, one line."""
        for key, now in (("steps_per_epoch", self.steps_per_epoch),
                         ("eval_every", self.eval_every),
                         ("accumulation_steps", int(self.config.accumulation_steps))):
            if state[key] != now:
                raise UserError(f"{path}: written with {key}={state[key]}, this run has {now}; "
                                f"resume needs the same data and settings")
        before, now = state.get("config") or {}, ckpt.plain(self.run_signature)
        if before.get("data_files") != now.get("data_files"):
            changed = sorted(name for name in set(before.get("data_files") or {})
                             | set(now.get("data_files") or {})
                             if (before.get("data_files") or {}).get(name)
                             != (now.get("data_files") or {}).get(name))
            raise UserError(f"{path}: the data changed since the interrupted run "
                            f"({', '.join(changed)}: other size or modification time); "
                            f"--resume continues the same data (run without --resume to train "
                            f"from the start)")
        for key in sorted(set(before) | set(now)):
            if key in RESUMABLE_CHANGES or before.get(key) == now.get(key):
                continue
            raise UserError(f"{path}: the interrupted run had {key}={before.get(key)!r}, this "
                            f"run has {key}={now.get(key)!r}; --resume continues the same "
                            f"configuration (run without --resume to train from the start)")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data_generator, metrics=None) -> dict:
        """``{metric: value}`` on labelled data (default metrics: the config's ``metrics``).

        ``gAUC`` groups by the config's ``group_id``, else by ``user_id``. Distributed: computed
        on rank 0 over the predictions of all ranks, then broadcast (errors included).
        """
        metrics = list(metrics or self.config.metrics)
        group_column = self.config.group_id or USER_ID
        columns = self._predict_columns(data_generator, with_labels=True,
                                        group_column=group_column if "gAUC" in metrics else None)

        def compute():
            logs = evaluate_metrics(columns["label"], columns["y_pred"], metrics,
                                    columns.get("group_id"))
            self._log("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
            return logs

        return distributed.run_on_main(compute)

    def predict(self, data_generator) -> np.ndarray:
        """Predicted probabilities ``(N,) float64`` in the loader's row order (all ranks' rows
        when distributed)."""
        return self._predict_columns(data_generator)["y_pred"]

    def _predict_columns(self, data_generator, with_labels=False, group_column=None) -> dict:
        """Forward every batch; ``{"y_pred", "label"?, "group_id"?}`` as numpy ``(N,)`` arrays.

        Logits stay on the device until the end (one transfer per column); ``y_pred`` is
        ``sigmoid(logit)`` in float64, so confident scores stay distinct instead of rounding to
        exactly 0 or 1.
        """
        self.model.eval()
        dtypes = {"y_pred": torch.float32}
        if with_labels:
            dtypes["label"] = torch.float32
        if group_column is not None:
            dtypes["group_id"] = torch.int64
        outputs = {name: [] for name in dtypes}
        batches = tqdm(data_generator, file=sys.stdout, mininterval=PROGRESS_INTERVAL_S,
                       disable=self.config.verbose == 0 or not distributed.is_main())
        with torch.no_grad():
            for batch in batches:  # float32, whatever the training precision
                logit = self.forward(batch, training=False)["logit"]
                outputs["y_pred"].append(logit.reshape(-1).float())
                if with_labels:
                    outputs["label"].append(labels_of(batch))
                if group_column is not None:
                    outputs["group_id"].append(batch[group_column].reshape(-1).long())
        if not outputs["y_pred"] and not distributed.is_distributed():
            raise UserError("the evaluation data yields no batches")
        columns = {}
        for name, parts in outputs.items():
            values = (torch.cat(parts) if parts
                      else torch.zeros(0, dtype=dtypes[name], device=self.device))
            values = distributed.gather_in_row_order(values, data_generator)
            dtype = np.int64 if name == "group_id" else np.float64
            columns[name] = values.cpu().numpy().astype(dtype, copy=False)
        columns["y_pred"] = sigmoid(columns["y_pred"])
        return columns

    # ------------------------------------------------------------------ weights
    def save_weights(self, checkpoint: str) -> None:
        """Write the model's ``state_dict()`` atomically (rank 0 only)."""
        if distributed.is_main():
            ckpt.save_atomic(self.model.state_dict(), checkpoint)

    def load_weights(self, checkpoint: str) -> None:
        """Load a ``state_dict`` file (FuxiCTR format); missing or mismatched -> UserError."""
        self.model.to(self.device)
        state_dict = ckpt.load_file(checkpoint, "model checkpoint")
        try:
            self.model.load_state_dict(state_dict)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            name = getattr(self.model, "model_id", type(self.model).__name__)
            raise UserError(f"{checkpoint}: weights do not match model {name} "
                            f"({first_line})") from None

    def _log(self, message: str) -> None:
        if distributed.is_main():
            logging.info(message)

    def _warn(self, message: str) -> None:
        if distributed.is_main():
            logging.warning(message)


def labels_of(batch: dict) -> torch.Tensor:
    """``batch["label"]`` as ``(B,) float32``; a batch without labels is a UserError."""
    if LABEL not in batch:
        raise UserError(f"evaluation data has no '{LABEL}' column")
    return batch[LABEL].reshape(-1).float()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float64 without overflow: ``(N,) -> (N,)``."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
