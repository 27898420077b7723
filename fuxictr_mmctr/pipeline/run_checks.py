"""Checks of a run's settings against its data, made once the data is loaded and before training.

* :func:`check_valid_labels`: the valid split chooses the checkpoint by AUC, which needs both
  classes; a split of one class is an error naming the file before the first epoch.
* :func:`history_settings_warning`: ``max_len`` or ``first_k_cols`` longer than the data's
  histories change nothing; one warning line says so (a config meant for other data).
* :func:`missing_truth_note`: why a run on a test split reports no test AUC.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from fuxictr_mmctr.errors import UserError


def check_valid_labels(labels, path: str) -> None:
    """Stop when the valid split's ``labels (N,)`` are missing or all one class."""
    if labels is None:
        raise UserError(f"{path}: the valid split has no label column; validation needs labels")
    if len(labels) == 0:
        raise UserError(f"{path}: the valid split has no rows")
    classes = np.unique(np.asarray(labels))
    if classes.size < 2:
        raise UserError(f"{path}: every label of the valid split is {classes[0]:g} "
                        f"({len(labels)} rows); AUC, which picks the best checkpoint, needs "
                        f"both classes")


def history_settings_warning(params: dict, history_length: int) -> str | None:
    """One line when ``max_len`` or ``first_k_cols`` exceed ``history_length`` (the data's
    ``item_seq`` length), else ``None``."""
    max_len = params.get("max_len")
    kept = history_length if max_len is None else min(int(max_len), history_length)
    longer = []
    if max_len is not None and int(max_len) > history_length:
        longer.append(f"max_len={max_len}")
    first_k_cols = params.get("first_k_cols")
    if first_k_cols is not None and int(first_k_cols) > kept:
        longer.append(f"first_k_cols={first_k_cols}")
    if not longer:
        return None
    return (f"{' and '.join(longer)} exceed the {history_length} history positions of the "
            f"data (item_seq in {params.get('train_data')}): the model sees {kept} positions; "
            f"set them to at most {kept} to say so")


def missing_truth_note(params: dict) -> str | None:
    """Why the result line has no ``test_AUC``: the test split is there but the test labels
    (``truth.parquet`` beside it) are not (logged with the path); ``None`` when there is
    nothing to explain."""
    from fuxictr_mmctr.data.scoring import TRUTH_FILE
    from fuxictr_mmctr.pipeline.datasets import dataset_folder

    test_path = params.get("test_data")
    if not test_path or not os.path.exists(test_path):
        return None
    truth = os.path.join(dataset_folder(params), TRUTH_FILE)
    if os.path.exists(truth):
        return None
    logging.info("No test AUC: the test labels (%s) are not there", truth)
    return f"no-{TRUTH_FILE}"
