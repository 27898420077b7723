"""MultimodalRankModel: FuxiCTR's BaseModel with a fast, resumable and fail-safe training loop.

Subclasses are written like FuxiCTR models (build layers, ``self.compile(optimizer, loss, lr)``,
``self.reset_parameters()``, ``self.model_to_device()``; ``forward(batch) -> {"y_pred": (B, 1)}``)
and get, in place of BaseModel's loop (DESIGN.md §6, §7):

* no host sync per step: the training loss is summed on the device and read only at
  evaluation points, where a non-finite sum stops training with a :class:`UserError`
  before anything is saved;
* gradient accumulation (``accumulation_steps``) and clipping (``max_gradient_norm``);
* predictions gathered on the device with one transfer, metrics from
  :mod:`fuxictr_mmctr.training.metrics` (vectorised gAUC grouped by ``user_id``);
* atomic checkpoints, a best-weights file even when no evaluation improved, and a resume
  state at every evaluation point so ``fit(..., resume=True)`` ends exactly where an
  uninterrupted run ends;
* distributed hooks: predictions of all ranks are gathered in row order, metrics computed on
  rank 0 and broadcast (so every rank takes the same early-stop decision), and only rank 0
  writes files and logs.

Batches are dicts of tensors already on ``self.device`` (see ``fuxictr_mmctr.data.batches``).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from torch import nn
from tqdm import tqdm

from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.schema import LABEL, USER_ID
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import checkpoint as ckpt
from fuxictr_mmctr.training.early_stopping import EarlyStopping
from fuxictr_mmctr.training.metrics import evaluate_metrics

#: Seconds between progress-bar refreshes (each refresh costs a little host time).
PROGRESS_INTERVAL_S = 1.0


def resolve_item_table(feature_map, item_table: ItemTable | None, item_info) -> ItemTable:
    """The model's item table: the one given, else read from the ``item_info`` parquet path."""
    if item_table is not None:
        return item_table
    if not item_info:
        raise UserError("model needs item_info (the path of item_info.parquet) in its config")
    from fuxictr_mmctr.data.id_remap import remap_for

    return ItemTable.from_item_info(item_info, feature_map, remap=remap_for(item_info))


class MultimodalRankModel(BaseModel):
    """Base class of the package's ranking models (FuxiCTR ``BaseModel`` constructor).

    Args beyond BaseModel's:
        max_gradient_norm: clip the global gradient norm to this (``None``/0: no clipping).
        accumulation_steps: batches whose gradients are summed per optimizer step; the loss of
            each is divided by the group size, so k batches of B equal one batch of k*B.
        seed: when given, seeds python/numpy/torch before the subclass builds its layers.
        save_resume_state: write ``<model_id>.resume.pt`` at each evaluation point.
        verbose, model_root, metrics: as in FuxiCTR, with defaults (1, ``./checkpoints/``,
            ``["logloss", "AUC"]``).
    """

    def __init__(self, feature_map, model_id="MultimodalRankModel", task="binary_classification",
                 gpu=-1, monitor="AUC", save_best_only=True, monitor_mode="max",
                 early_stop_patience=2, eval_steps=None, embedding_regularizer=None,
                 net_regularizer=None, reduce_lr_on_plateau=True, max_gradient_norm=10.0,
                 accumulation_steps=1, seed=None, save_resume_state=True, verbose=1,
                 model_root="./checkpoints/", metrics=("logloss", "AUC"), **kwargs):
        if seed is not None:
            seed_everything(seed=int(seed))
        if eval_steps is not None and int(eval_steps) < 1:
            raise UserError(f"eval_steps must be a positive integer or null, got {eval_steps}")
        if int(accumulation_steps) < 1:
            raise UserError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        super().__init__(feature_map, model_id=model_id, task=task, gpu=gpu, monitor=monitor,
                         save_best_only=save_best_only, monitor_mode=monitor_mode,
                         early_stop_patience=early_stop_patience, eval_steps=eval_steps,
                         embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer,
                         reduce_lr_on_plateau=reduce_lr_on_plateau, verbose=verbose,
                         model_root=model_root, metrics=list(metrics), **kwargs)
        self._max_gradient_norm = max_gradient_norm
        self._accumulation_steps = int(accumulation_steps)
        self._save_resume_state = bool(save_resume_state)
        self._stopper = EarlyStopping(self._monitor, monitor_mode, early_stop_patience)
        # A DistributedDataParallel wrapper of self, kept out of the module tree (a registered
        # submodule wrapping its parent would make state_dict() recurse forever).
        object.__setattr__(self, "_ddp_module", None)

    # ------------------------------------------------------------------ paths
    @property
    def resume_checkpoint(self) -> str:
        """``<model_root>/<dataset_id>/<model_id>.resume.pt``."""
        return ckpt.resume_path(self.checkpoint)

    def wrap_distributed(self, **ddp_kwargs) -> None:
        """Train through ``DistributedDataParallel(self)`` (process group already initialised)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        object.__setattr__(self, "_ddp_module", nn.parallel.DistributedDataParallel(
            self, device_ids=device_ids, **ddp_kwargs))

    # ------------------------------------------------------------------ training
    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=None,
            resume=False, **kwargs):
        """Train ``epochs`` epochs, evaluating every ``eval_steps`` batches (default: each epoch).

        ``max_gradient_norm`` overrides the constructor's value. ``resume=True`` continues from
        ``resume_checkpoint`` when it exists: mid-epoch resume skips the batches of that epoch
        already trained on (the loader's order is fixed by ``set_epoch``). Other keyword
        arguments (FuxiCTR passes all params) are ignored. Ends with the best weights loaded.
        """
        if not hasattr(self, "optimizer"):
            raise UserError(f"model {self.model_id}: call compile(optimizer, loss, lr) before fit")
        if max_gradient_norm is not None:
            self._max_gradient_norm = max_gradient_norm
        self.valid_gen = validation_data
        self._steps_per_epoch = len(data_generator)
        if self._steps_per_epoch == 0:
            raise UserError("the training data yields no batches")
        self._eval_every = int(self._eval_steps or self._steps_per_epoch)
        self._stopper = EarlyStopping(self._monitor, self._monitor_mode, self._early_stop_patience)
        self._global_step, self._epoch = 0, 0
        self._checkpoint_saved = False
        self._reset_loss_sum()
        start_epoch, start_batch = 0, 0
        if resume:
            start_epoch, start_batch = self._load_resume_state()
        self.optimizer.zero_grad(set_to_none=True)
        self._log(f"Start training: {self._steps_per_epoch} batches/epoch")
        for epoch in range(start_epoch, int(epochs)):
            if self._stopper.stopped:
                break
            self._log(f"************ Epoch={epoch + 1} start ************")
            self._train_epoch(data_generator, epoch, start_batch if epoch == start_epoch else 0)
            if not self._stopper.stopped:
                self._log(f"************ Epoch={epoch + 1} end ************")
        self._finish_training()

    def _train_epoch(self, data_generator, epoch: int, start_batch: int) -> None:
        """One epoch from batch ``start_batch``; stops early when the stopper says so."""
        self._epoch = epoch
        if hasattr(data_generator, "set_epoch"):
            data_generator.set_epoch(epoch)
        self.train()
        steps, group = self._steps_per_epoch, self._accumulation_steps
        batches = iter(data_generator)
        if start_batch:
            batches = itertools.islice(batches, start_batch, None)  # already trained on
        batches = tqdm(batches, total=steps, initial=start_batch, file=sys.stdout,
                       disable=self._verbose == 0 or not _is_main(),
                       mininterval=PROGRESS_INTERVAL_S, desc=f"Epoch {epoch + 1}")
        eval_due = False
        for batch_index, batch in enumerate(batches, start=start_batch):
            group_start = batch_index - batch_index % group
            group_size = min(group, steps - group_start)  # the epoch's last group may be short
            group_ends = batch_index + 1 - group_start >= group_size
            self._accumulate_gradients(batch, 1.0 / group_size, sync=group_ends)
            self._global_step += 1
            eval_due |= self._global_step % self._eval_every == 0
            if not group_ends:
                continue  # mid-group: evaluate only where no gradient is pending
            self._optimizer_step()
            if eval_due:
                eval_due = False
                self._evaluation_point(epoch, batch_index + 1, batches)
                if self._stopper.stopped:
                    break
        batches.close()

    def _accumulate_gradients(self, batch: dict, scale: float, sync: bool = True) -> None:
        """Forward and backward of one batch; its loss is added to the device-side sum.

        Under DDP, ``sync=False`` (a batch inside an accumulation group) skips the gradient
        all-reduce: only the group's last backward exchanges gradients.
        """
        module = self._ddp_module if self._ddp_module is not None else self
        skip_all_reduce = self._ddp_module is not None and not sync
        with module.no_sync() if skip_all_reduce else contextlib.nullcontext():
            return_dict = module(batch)
            loss = self.compute_loss(return_dict, self.get_labels(batch))
            (loss * scale).backward()
        self._loss_sum += loss.detach()
        self._loss_batches += 1

    def _optimizer_step(self) -> None:
        if self._max_gradient_norm:
            nn.utils.clip_grad_norm_(self.parameters(), self._max_gradient_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _evaluation_point(self, epoch: int, batches_done: int, progress) -> None:
        """Log the train loss, evaluate, checkpoint, early-stop, save the resume state."""
        train_loss = self._read_train_loss(epoch)
        self._log(f"Train loss: {train_loss:.6f}")
        progress.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
        if self.valid_gen is not None:
            self._log(f"Evaluation @epoch {epoch + 1} - batch {batches_done}: ")
            logs = self.evaluate(self.valid_gen, metrics=self._stopper.metrics)
            self._checkpoint_and_earlystop(logs, epoch)
            self.train()
        if self._save_resume_state:
            self._write_resume_state(epoch, batches_done)

    def _read_train_loss(self, epoch: int) -> float:
        """Mean loss since the last read (one host sync); non-finite -> UserError.

        Distributed: summed over ranks first, so a NaN on any rank stops every rank.
        """
        batches = max(self._loss_batches, 1)
        if _distributed():
            dist.all_reduce(self._loss_sum)
            batches *= dist.get_world_size()
        total = float(self._loss_sum.item())
        first_step = self._global_step - self._loss_batches + 1
        self._reset_loss_sum()
        if not np.isfinite(total):
            raise UserError(
                f"training loss became {total} between global steps {first_step} and "
                f"{self._global_step} (epoch {epoch + 1}); training stopped, best checkpoint "
                f"{self.checkpoint} left unchanged (lower the learning rate or check the data)")
        return total / batches

    def _reset_loss_sum(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_batches = 0

    def _checkpoint_and_earlystop(self, logs: dict, epoch: int) -> None:
        """FuxiCTR's rules: save on improvement, decay lr on plateau, stop after patience."""
        mode = self._monitor_mode
        decision = self._stopper.update(logs)
        if decision.improved:
            if self._save_best_only:
                self._log(f"Save best model: monitor({mode})={decision.value:.6f}")
                self.save_weights(self.checkpoint)
                self._checkpoint_saved = True
        else:
            self._log(f"Monitor({mode})={decision.value:.6f} STOP!")
            if self._reduce_lr_on_plateau:
                self._log(f"Reduce learning rate on plateau: {self.lr_decay():.6f}")
        if decision.stop:
            self._log(f"********* Epoch={epoch + 1} early stop *********")
        if not self._save_best_only:
            self.save_weights(self.checkpoint)
            self._checkpoint_saved = True

    def _finish_training(self) -> None:
        """Load the best weights, or save the final ones when no evaluation saved any."""
        if self._loss_batches:
            self._read_train_loss(self._epoch)  # never keep weights trained on a diverged loss
        self._log("Training finished.")
        if self._checkpoint_saved:
            _barrier()
            self._log(f"Load best model: {self.checkpoint}")
            self.load_weights(self.checkpoint)
        else:
            self._log(f"No evaluation saved a checkpoint; saving the final weights: "
                      f"{self.checkpoint}")
            self.save_weights(self.checkpoint)
            _barrier()

    # ------------------------------------------------------------------ resume state
    def _write_resume_state(self, epoch: int, batches_done: int) -> None:
        rng = ckpt.capture_rng_state()
        rng_per_rank = _all_gather_objects(rng)
        if not _is_main():
            return
        state = {
            "format": ckpt.RESUME_FORMAT,
            "model": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "batches_done": batches_done,
            "global_step": self._global_step,
            "steps_per_epoch": self._steps_per_epoch,
            "eval_every": self._eval_every,
            "accumulation_steps": self._accumulation_steps,
            "early_stopping": self._stopper.state_dict(),
            "checkpoint_saved": self._checkpoint_saved,
            "lr": [group["lr"] for group in self.optimizer.param_groups],
            "rng": rng_per_rank,
        }
        ckpt.save_atomic(state, self.resume_checkpoint)

    def _load_resume_state(self) -> tuple[int, int]:
        """Restore a resume state; returns ``(epoch, batch)`` to continue from."""
        path = self.resume_checkpoint
        if not os.path.exists(path):
            self._log(f"No resume state at {path}; training from the start")
            return 0, 0
        state = ckpt.load_file(path, "resume state")
        if not isinstance(state, dict) or state.get("format") != ckpt.RESUME_FORMAT:
            raise UserError(f"{path}: not a resume state of format {ckpt.RESUME_FORMAT}")
        for key, now in (("steps_per_epoch", self._steps_per_epoch),
                         ("eval_every", self._eval_every),
                         ("accumulation_steps", self._accumulation_steps)):
            if state[key] != now:
                raise UserError(f"{path}: written with {key}={state[key]}, this run has {now}; "
                                f"resume needs the same data and settings")
        try:
            self.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise UserError(f"{path}: does not match model {self.model_id} ({first_line})") \
                from None
        self._stopper.load_state_dict(state["early_stopping"])
        self._global_step = state["global_step"]
        self._checkpoint_saved = state["checkpoint_saved"]
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[min(_rank(), len(rng_states) - 1)])
        epoch, batches_done = state["epoch"], state["batches_done"]
        self._log(f"Resume from {path}: epoch={epoch + 1}, batch={batches_done}, "
                  f"global step={self._global_step}")
        if batches_done >= self._steps_per_epoch:
            return epoch + 1, 0
        return epoch, batches_done

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data_generator, metrics=None) -> dict:
        """``{metric: value}`` on labelled data (default metrics: the ``metrics`` param).

        ``gAUC`` groups by the feature map's ``group_id``, else by ``user_id``. Distributed:
        computed on rank 0 over the predictions of all ranks, then broadcast.
        """
        metrics = list(metrics or self.validation_metrics)
        group_column = getattr(self.feature_map, "group_id", None) or USER_ID
        columns = self._predict_columns(data_generator, with_labels=True,
                                        group_column=group_column if "gAUC" in metrics else None)
        logs = None
        if _is_main():
            logs = evaluate_metrics(columns["label"], columns["y_pred"], metrics,
                                    columns.get("group_id"))
            self._log("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
        return _broadcast_object(logs)

    def predict(self, data_generator) -> np.ndarray:
        """Predicted probabilities ``(N,) float64`` in the loader's row order (all ranks' rows
        when distributed)."""
        return self._predict_columns(data_generator)["y_pred"]

    def _predict_columns(self, data_generator, with_labels=False, group_column=None) -> dict:
        """Forward every batch; ``{"y_pred", "label"?, "group_id"?}`` as numpy ``(N,)`` arrays.

        Outputs stay on the device until the end: one transfer per column.
        """
        self.eval()
        outputs = {"y_pred": []}
        if with_labels:
            outputs["label"] = []
        if group_column is not None:
            outputs["group_id"] = []
        batches = tqdm(data_generator, file=sys.stdout, mininterval=PROGRESS_INTERVAL_S,
                       disable=self._verbose == 0 or not _is_main())
        with torch.no_grad():
            for batch in batches:
                outputs["y_pred"].append(self.forward(batch)["y_pred"].reshape(-1).float())
                if with_labels:
                    if LABEL not in batch:
                        raise UserError(f"evaluation data has no '{LABEL}' column")
                    outputs["label"].append(self.get_labels(batch).reshape(-1))
                if group_column is not None:
                    outputs["group_id"].append(batch[group_column].reshape(-1))
        if not outputs["y_pred"] and not _distributed():
            raise UserError("the evaluation data yields no batches")
        columns = {}
        for name, parts in outputs.items():
            values = torch.cat(parts) if parts else torch.zeros(0, device=self.device)
            values = _gather_in_row_order(values, data_generator)
            dtype = np.float64 if values.is_floating_point() else np.int64
            columns[name] = values.cpu().numpy().astype(dtype, copy=False)
        return columns

    # ------------------------------------------------------------------ weights
    def save_weights(self, checkpoint) -> None:
        """Write ``state_dict()`` atomically (rank 0 only)."""
        if _is_main():
            ckpt.save_atomic(self.state_dict(), checkpoint)

    def load_weights(self, checkpoint) -> None:
        """Load a ``state_dict`` file (FuxiCTR format); missing or mismatched -> UserError."""
        self.to(self.device)
        state_dict = ckpt.load_file(checkpoint, "model checkpoint")
        try:
            self.load_state_dict(state_dict)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise UserError(f"{checkpoint}: weights do not match model {self.model_id} "
                            f"({first_line})") from None

    def _log(self, message: str) -> None:
        if _is_main():
            logging.info(message)


# ---------------------------------------------------------------------- distributed helpers
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _is_main() -> bool:
    return _rank() == 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not _distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not _distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _gather_in_row_order(values: torch.Tensor, data_generator) -> torch.Tensor:
    """All ranks' ``values (n_r,)`` concatenated and put in row order: ``(N,)``.

    Each rank's loader says which rows it yielded (``row_indices()``); shards have different
    lengths, so values are padded to the longest before ``all_gather``.
    """
    if not _distributed():
        return values
    if not hasattr(data_generator, "row_indices"):
        raise UserError("distributed evaluation needs a loader with row_indices()")
    rows = torch.as_tensor(np.asarray(data_generator.row_indices()), dtype=torch.int64,
                           device=values.device)
    world = dist.get_world_size()
    count = torch.tensor([len(values)], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_values = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded_values[:len(values)] = values
    padded_rows = torch.zeros(longest, dtype=torch.int64, device=values.device)
    padded_rows[:len(rows)] = rows
    all_values = [torch.empty_like(padded_values) for _ in range(world)]
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    dist.all_gather(all_values, padded_values)
    dist.all_gather(all_rows, padded_rows)
    keep = [slice(0, int(c.item())) for c in counts]
    merged_values = torch.cat([v[k] for v, k in zip(all_values, keep)])
    merged_rows = torch.cat([r[k] for r, k in zip(all_rows, keep)])
    return merged_values[torch.argsort(merged_rows)]
