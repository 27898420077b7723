"""Trainer: the one training loop every model shares (the loop and the loss).

A model only says how a batch becomes a logit; it builds its trainer on first use, so that a
model built for prediction or inspection allocates no optimizer and sets no global flag.

* loss: BCE-with-logits on the float32 logit (a probability saturates at exactly 1.0 in
  float32), plus the model's ``regularization_loss()`` and a returned ``aux_loss``;
* no host sync per step: the loss is summed on the device and read at evaluation points, where
  a non-finite sum stops training with a :class:`UserError` before anything is saved;
* gradient accumulation (``accumulation_steps``), clipping (``max_gradient_norm``), the
  optimizer built on the first step, TF32 (``tf32``) on during training steps only;
* evaluation points: FuxiCTR's checkpoint / lr-decay / early-stop rules, listeners, the resume
  state (:mod:`~fuxictr_mmctr.training.resume`); evaluation and prediction themselves are
  :mod:`~fuxictr_mmctr.training.evaluation`, weights files :mod:`~fuxictr_mmctr.training.weights`;
* DistributedDataParallel (:meth:`Trainer.wrap_distributed`) and the speed switches of
  :mod:`~fuxictr_mmctr.training.speed` (precision, compile, tf32, fused optimizer).

Batches are dicts of tensors already on the model's device (``fuxictr_mmctr.data.batches``).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fuxictr_mmctr.data.schema import USER_ID
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import checkpoint as ckpt
from fuxictr_mmctr.training import checkpoint_rules, distributed, evaluation, speed, weights
from fuxictr_mmctr.training.early_stopping import EarlyStopping
from fuxictr_mmctr.training.evaluation import PROGRESS_INTERVAL_S, labels_of
from fuxictr_mmctr.training.loss_meter import LossMeter
from fuxictr_mmctr.training.resume import restore_state, write_state
from fuxictr_mmctr.training.trainer_config import TrainerConfig


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
        self.run_signature = run_signature if run_signature is not None else {}
        self.autocast_dtype = speed.autocast_dtype(config.precision, self.device)
        self.scaler = speed.grad_scaler(self.device, self.autocast_dtype)
        self._optimizer = None
        self.compiling = speed.compile_requested(bool(config.compile), self.device)
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
        self.loss_meter = LossMeter(self.device)

    @property
    def resume_checkpoint(self) -> str:
        """``<model_root>/<dataset_id>/<model_id>.resume.pt``."""
        return ckpt.resume_path(self.checkpoint)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The config's optimizer over the model's trainable parameters, built on first use."""
        if self._optimizer is None:
            self._optimizer = self.config.make_optimizer(self.model.parameters(), self.device)
        return self._optimizer

    # ------------------------------------------------------------------ distributed
    def wrap_distributed(self, **ddp_kwargs) -> None:
        """Train through ``DistributedDataParallel`` (:func:`distributed.wrap_model`; process
        group already initialised). Each rank then gets its own random stream (``seed +
        rank``), so dropout masks differ between ranks."""
        self.ddp_module = distributed.wrap_model(self.model, self.device, **ddp_kwargs)
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
        self.loss_meter.reset()
        start_epoch, start_batch = (restore_state(self) if resume else (0, 0))
        self.optimizer.zero_grad(set_to_none=True)
        self._log(f"Start training: {self.steps_per_epoch} batches/epoch")
        self._log(f"Speed: precision={self.config.precision}, compile={self.compiling}, "
                  f"tf32={self.config.tf32 and self.device.type == 'cuda'}, fused optimizer="
                  f"{bool(self.optimizer.defaults.get('fused'))}")
        with speed.tf32(self.config.tf32):  # evaluation points turn it off for themselves
            for epoch in range(start_epoch, int(epochs)):
                if self.stopper.stopped:
                    break
                self._log(f"************ Epoch={epoch + 1} start ************")
                self._train_epoch(data_generator, epoch,
                                  start_batch if epoch == start_epoch else 0)
                if not self.stopper.stopped:
                    self._log(f"************ Epoch={epoch + 1} end ************")
        checkpoint_rules.finish(self)

    def _train_epoch(self, data_generator, epoch: int, start_batch: int) -> None:
        """One epoch from batch ``start_batch``; stops early when the stopper says so."""
        self.epoch = epoch
        if hasattr(data_generator, "set_epoch"):
            data_generator.set_epoch(epoch)
        self.model.train()
        steps, group = self.steps_per_epoch, int(self.config.accumulation_steps)
        if start_batch and hasattr(data_generator, "iter_from"):
            batches = data_generator.iter_from(start_batch)  # skipped rows never gathered
        else:
            batches = itertools.islice(iter(data_generator), start_batch, None)
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
        with speed.tf32(self.config.tf32):
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
        self.loss_meter.add(loss)

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
        if id(module) not in self._compiled:
            self._compiled[id(module)] = speed.CompiledForward(module)
        return self._compiled[id(module)](batch)

    def lr_decay(self, factor: float | None = None, min_lr: float = 1e-6) -> float:
        """Multiply every learning rate by ``factor`` (default: the config's
        ``lr_decay_factor``), not below ``min_lr``; returns the new rate."""
        factor = float(self.config.lr_decay_factor if factor is None else factor)
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, min_lr)
        return self.optimizer.param_groups[0]["lr"]

    def _evaluation_point(self, epoch: int, batches_done: int, progress) -> None:
        """Log the train loss, evaluate, checkpoint, early-stop, save the resume state."""
        train_loss = self.loss_meter.read(self.global_step, epoch, self.checkpoint)
        self._log(f"Train loss: {train_loss:.6f}")
        progress.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
        if self.valid_gen is not None:
            self._log(f"Evaluation @epoch {epoch + 1} - batch {batches_done}: ")
            logs = self.evaluate(self.valid_gen, metrics=self.stopper.metrics)
            checkpoint_rules.after_evaluation(self, logs, epoch)
            for listener in self.evaluation_listeners:
                listener(logs, epoch + batches_done / self.steps_per_epoch)
            self.model.train()
        if self.config.save_resume_state:
            write_state(self, epoch, batches_done)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data_generator, metrics=None) -> dict:
        """``{metric: value}`` on labelled data (default metrics: the config's ``metrics``);
        ``gAUC`` groups by the config's ``group_id``, else by ``user_id``."""
        self.model.eval()
        return evaluation.evaluate(self._eval_forward, data_generator, self.device,
                                   list(metrics or self.config.metrics),
                                   self.config.group_id or USER_ID, verbose=self.config.verbose)

    def predict(self, data_generator) -> np.ndarray:
        """Predicted probabilities ``(N,) float64`` in the loader's row order (all ranks' rows
        when distributed)."""
        self.model.eval()
        return evaluation.predict_columns(self._eval_forward, data_generator, self.device,
                                          verbose=self.config.verbose)["y_pred"]

    def _eval_forward(self, batch: dict) -> dict:
        return self.forward(batch, training=False)

    # ------------------------------------------------------------------ weights
    def save_weights(self, checkpoint: str) -> None:
        weights.save(self.model, checkpoint, self.run_signature)

    def load_weights(self, checkpoint: str) -> None:
        weights.load(self.model, checkpoint, self.device)

    def _log(self, message: str) -> None:
        if distributed.is_main():
            logging.info(message)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
