"""Predict with a trained experiment: a challenge submission zip, or scores for any parquet."""
from __future__ import annotations

import logging
import os
import zipfile

import numpy as np

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import atomic_path

SUBMISSION_CSV = "prediction.csv"


def _format_rows(ids: np.ndarray, scores: np.ndarray, score_column: str) -> str:
    """CSV text ``ID,<score_column>`` with one line per row.

    Scores are written with ``repr`` (the shortest text that reads back as the same float64),
    so two different scores never print the same: a fixed ``.8f`` would turn every confident
    score into 1.00000000 or 0.00000000 and tie them in the AUC.
    """
    lines = [f"ID,{score_column}"]
    lines.extend(f"{i},{s!r}" for i, s in zip(ids.tolist(), scores.tolist()))
    return "\n".join(lines) + "\n"


def predict_scores(config_dir: str, expid: str, gpu: int, data_path: str) -> np.ndarray:
    """Scores of the best checkpoint of ``expid`` for every row of ``data_path``, in row order."""
    from fuxictr_mmctr.pipeline.experiment import build_model, load_params, make_loader, prepare
    from fuxictr_mmctr.training.devices import resolve_device

    resolve_device(gpu)
    if not os.path.exists(data_path):
        raise UserError(f"{data_path} not found")
    params = load_params(config_dir, expid, gpu)
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    if not os.path.exists(model.checkpoint):
        raise UserError(f"no trained model for expid {expid} at {model.checkpoint}; "
                        f"train it first: python run_expid.py --expid {expid}")
    model.load_weights(model.checkpoint)
    # Read with the trained dataset's schema and item-id mapping, wherever the file lives.
    loader = make_loader(params, catalogue, data_path, train=False, device=model.device)
    scores = np.asarray(model.predict(loader), dtype=np.float64).reshape(-1)
    expected = loader.num_rows
    if len(scores) != expected:
        raise UserError(f"{data_path}: predicted {len(scores)} rows but the file has {expected}")
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{data_path}: the model produced non-finite scores; the checkpoint is bad")
    return scores


def write_submission(scores: np.ndarray, zip_path: str) -> None:
    """Write the challenge submission: a zip holding ``prediction.csv`` (``ID,Task2``)."""
    text = _format_rows(np.arange(len(scores)), scores, "Task2")
    with atomic_path(zip_path) as tmp_path:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(SUBMISSION_CSV, text)


def write_scores_csv(scores: np.ndarray, csv_path: str) -> None:
    """Write ``ID,score`` in row order."""
    with atomic_path(csv_path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            handle.write(_format_rows(np.arange(len(scores)), scores, "score"))


def run_prediction(config_dir: str, expid: str, gpu: int = -1, data: str | None = None,
                   out: str | None = None) -> str:
    """Score the test split (submission zip) or ``data`` (CSV at ``out``); return the path written."""
    from fuxictr_mmctr.pipeline.experiment import load_params

    if (data is None) != (out is None):
        raise UserError("--data and --out go together: pass both or neither")
    if data is None:
        data = load_params(config_dir, expid, gpu)["test_data"]
        out = os.path.join("submission", f"{expid}.zip")
        scores = predict_scores(config_dir, expid, gpu, data)
        write_submission(scores, out)
    else:
        scores = predict_scores(config_dir, expid, gpu, data)
        write_scores_csv(scores, out)
    logging.info("Wrote %d predictions to %s", len(scores), out)
    print(f"wrote {len(scores)} predictions to {out}")
    return out
