"""Score a challenge-format submission on a synthetic dataset (``fuxictr-mmctr score``).

A submission is a zip holding ``prediction.csv`` with columns ``ID`` (0..N-1, the position of
the row in ``test.parquet``) and ``Task2`` (the predicted click probability). The score is the
ROC AUC against the test labels, which only the synthetic dataset's ``truth.parquet`` holds.
Every malformed submission is a one-line :class:`~fuxictr_mmctr.errors.UserError` naming the
file, column and row; so is a damaged zip (flipped bytes, a truncated file, a CRC error, an
encrypted member or an unknown compression method).
"""
from __future__ import annotations

import io
import os
import zipfile
import zlib

import numpy as np
import pandas as pd

from fuxictr_mmctr.errors import UserError, first_line, location

PREDICTION_FILE = "prediction.csv"
ID_COLUMN = "ID"
SCORE_COLUMN = "Task2"
TRUTH_FILE = "truth.parquet"
TEST_SPLIT = "test"


def score_submission(zip_path, truth_dir) -> float:
    """AUC of the submission zip's ``Task2`` scores against the test labels in ``truth_dir``."""
    from sklearn.metrics import roc_auc_score

    labels = load_test_labels(truth_dir)
    scores = read_submission(zip_path, num_rows=len(labels))
    return float(roc_auc_score(labels, scores))


def load_test_labels(truth_dir) -> np.ndarray:
    """Test labels ``(N,) int64`` in test-row order from ``truth_dir/truth.parquet``."""
    import pyarrow.parquet as pq

    path = os.path.join(truth_dir, TRUTH_FILE)
    if os.path.isfile(truth_dir):
        raise UserError(f"{truth_dir}: is a file, not a folder; --truth takes the synthetic "
                        f"dataset folder that holds {TRUTH_FILE}")
    if not os.path.isdir(truth_dir):
        raise UserError(f"{truth_dir}: truth folder not found")
    if not os.path.exists(path):
        raise UserError(f"{truth_dir}: no {TRUTH_FILE} here; scoring needs a synthetic dataset "
                        f"folder written by `fuxictr-mmctr synth` "
                        f"(real test labels are not public)")
    try:
        truth = pq.read_table(path, columns=["split", "row", "label"]).to_pandas()
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{path}: not a readable truth file ({error})") from None
    test = truth[truth["split"] == TEST_SPLIT].sort_values("row")
    if test.empty:
        raise UserError(f"{path}: no rows with split == {TEST_SPLIT!r}")
    labels = test["label"].to_numpy(dtype=np.int64)
    if labels.min() == labels.max():
        raise UserError(f"{path}: test labels are all {labels[0]}; AUC is undefined")
    return labels


def read_submission(zip_path, num_rows: int) -> np.ndarray:
    """Scores ``(num_rows,) float64`` of a submission zip, ordered by ``ID``."""
    frame, where = _read_prediction_csv(zip_path)
    for column in (ID_COLUMN, SCORE_COLUMN):
        if column not in frame.columns:
            raise UserError(f"{where}: missing column {column!r} (columns: {list(frame.columns)})")
    if len(frame) != num_rows:
        raise UserError(f"{where}: {len(frame)} rows, expected {num_rows} (one per test row)")
    ids = _parse_ids(frame[ID_COLUMN], where, num_rows)
    scores = _parse_scores(frame[SCORE_COLUMN], where)
    ordered = np.empty(num_rows)
    ordered[ids] = scores
    return ordered


#: What reading a damaged zip raises: bad headers or CRC (BadZipFile), damaged compressed data
#: (zlib.error, EOFError), an encrypted member (RuntimeError), an unknown compression method or
#: zip version (NotImplementedError), and I/O errors.
DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
                      NotImplementedError, OSError, ValueError)


def _read_prediction_csv(zip_path) -> tuple[pd.DataFrame, str]:
    """The submission's ``prediction.csv`` as strings, and the name used in messages."""
    if os.path.isdir(zip_path):
        raise UserError(f"{zip_path}: is a folder; give the submission zip file")
    if os.path.exists(zip_path) and not os.path.isfile(zip_path):
        raise UserError(f"{zip_path}: is not a regular file; give the submission zip file")
    if not os.path.isfile(zip_path):
        raise UserError(f"{zip_path}: submission file not found")
    if not zipfile.is_zipfile(zip_path):
        raise UserError(f"{zip_path}: not a zip file (zip a {PREDICTION_FILE} with columns "
                        f"{ID_COLUMN},{SCORE_COLUMN})")
    where = zip_path
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [name for name in archive.namelist()
                       if os.path.basename(name) == PREDICTION_FILE]
            if len(members) != 1:
                found = "none" if not members else f"{len(members)}"
                raise UserError(f"{zip_path}: expected one {PREDICTION_FILE} inside, found "
                                f"{found} (members: {archive.namelist()[:5]})")
            where = f"{zip_path}:{members[0]}"
            raw = archive.read(members[0])
    except DAMAGED_ZIP_ERRORS as error:
        raise UserError(f"{where}: damaged or unreadable zip ({first_line(error)}); "
                        f"zip the {PREDICTION_FILE} again") from None
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"{where}: not a readable CSV ({str(error).splitlines()[0]})") from None
    frame.columns = [str(name).strip() for name in frame.columns]
    return frame, where


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _parse_ids(text: pd.Series, where: str, num_rows: int) -> np.ndarray:
    """IDs as ``(N,) int64``: integers, each of ``0..num_rows-1`` exactly once.

    With ``num_rows`` rows in range, a missing ID always comes with a duplicate, so one message
    names both.
    """
    values = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = _first(bad)
        raise UserError(f"{location(where, ID_COLUMN, row)}: "
                        f"{text.iloc[row]!r} is not an integer ID")
    ids = values.astype(np.int64)
    outside = (ids < 0) | (ids >= num_rows)
    if outside.any():
        row = _first(outside)
        raise UserError(f"{location(where, ID_COLUMN, row)}: "
                        f"ID {ids[row]} outside 0..{num_rows - 1}")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(np.diff(ids[order]) == 0)
    if len(repeated):
        earlier, later = order[repeated[0]], order[repeated[0] + 1]
        raise UserError(f"{location(where, ID_COLUMN, int(later))}: duplicate ID {ids[later]} "
                        f"(also at row {int(earlier)}); "
                        f"ID {_first_missing(ids, num_rows)} is missing")
    return ids


def _first_missing(ids: np.ndarray, num_rows: int) -> int:
    """Smallest ID of ``0..num_rows-1`` absent from ``ids``."""
    present = np.zeros(num_rows, dtype=bool)
    present[ids] = True
    return _first(~present)


def _parse_scores(text: pd.Series, where: str) -> np.ndarray:
    """``Task2`` as ``(N,) float64`` probabilities: numbers, finite, within ``[0, 1]``."""
    stripped = text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=np.float64)
    spelled_nan = stripped.str.lower().isin(["nan", ""]).to_numpy()
    not_number = np.isnan(values) & ~spelled_nan
    if not_number.any():
        row = _first(not_number)
        raise UserError(f"{location(where, SCORE_COLUMN, row)}: {text.iloc[row]!r} is not a number")
    if np.isnan(values).any():
        row = _first(np.isnan(values))
        raise UserError(f"{location(where, SCORE_COLUMN, row)}: missing or NaN score")
    if np.isinf(values).any():
        row = _first(np.isinf(values))
        raise UserError(f"{location(where, SCORE_COLUMN, row)}: infinite score {text.iloc[row]!r}")
    outside = (values < 0) | (values > 1)
    if outside.any():
        row = _first(outside)
        raise UserError(f"{location(where, SCORE_COLUMN, row)}: score {values[row]} outside [0, 1]")
    return values
