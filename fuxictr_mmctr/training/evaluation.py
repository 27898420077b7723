"""Evaluation and prediction: every batch forwarded once, metrics computed once.

* predictions stay on the device until one transfer per column; probabilities are
  ``sigmoid(logit)`` computed in float64 on the host, so confident scores stay distinct
  instead of rounding to exactly 0 or 1;
* the forward runs in float32 with TF32 off, whatever the training precision (bf16 or TF32
  would tie scores that float32 keeps apart);
* metrics come from :mod:`fuxictr_mmctr.training.metrics` (vectorised AUC, gAUC, logloss);
* distributed: each rank forwards its shard; the columns are gathered in the loader's row
  order and the metrics computed on rank 0, then broadcast (errors included).
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from fuxictr_mmctr.data.schema import LABEL
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import distributed, speed
from fuxictr_mmctr.training.metrics import evaluate_metrics

#: Seconds between progress-bar refreshes (each refresh costs a little host time).
PROGRESS_INTERVAL_S = 1.0


def predict_columns(forward: Callable[[dict], dict], data_generator, device: torch.device,
                    with_labels: bool = False, group_column: str | None = None,
                    verbose: int = 1) -> dict:
    """Forward every batch; ``{"y_pred", "label"?, "group_id"?}`` as numpy ``(N,)`` arrays.

    Args:
        forward: ``batch -> {"logit": (B, 1), ...}`` (the model in eval mode, compiled or not).
        data_generator: batches already on ``device``.
        with_labels: also return the ``label`` column (float64).
        group_column: also return this batch column as ``group_id`` (int64), for gAUC.
    """
    dtypes = {"y_pred": torch.float32}
    if with_labels:
        dtypes["label"] = torch.float32
    if group_column is not None:
        dtypes["group_id"] = torch.int64
    outputs = {name: [] for name in dtypes}
    batches = tqdm(data_generator, file=sys.stdout, mininterval=PROGRESS_INTERVAL_S,
                   disable=verbose == 0 or not distributed.is_main())
    with torch.no_grad(), speed.tf32(False):
        for batch in batches:
            logit = forward(batch)["logit"]
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
                  else torch.zeros(0, dtype=dtypes[name], device=device))
        values = distributed.gather_in_row_order(values, data_generator)
        dtype = np.int64 if name == "group_id" else np.float64
        columns[name] = values.cpu().numpy().astype(dtype, copy=False)
    columns["y_pred"] = sigmoid(columns["y_pred"])
    return columns


def evaluate(forward: Callable[[dict], dict], data_generator, device: torch.device,
             metrics: list[str], group_column: str, verbose: int = 1) -> dict:
    """``{metric: value}`` on labelled data, logged on rank 0 as FuxiCTR logs it.

    ``gAUC`` groups rows by ``group_column``; the other metrics ignore it.
    """
    columns = predict_columns(forward, data_generator, device, with_labels=True,
                              group_column=group_column if "gAUC" in metrics else None,
                              verbose=verbose)

    def compute():  # runs on rank 0 only (run_on_main)
        logs = evaluate_metrics(columns["label"], columns["y_pred"], metrics,
                                columns.get("group_id"))
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
        return logs

    return distributed.run_on_main(compute)


def labels_of(batch: dict) -> torch.Tensor:
    """``batch["label"]`` as ``(B,) float32``; a batch without labels is a UserError."""
    if LABEL not in batch:
        raise UserError(f"evaluation data has no '{LABEL}' column")
    return batch[LABEL].reshape(-1).float()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float64 without overflow: ``(N,) -> (N,)``."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))
