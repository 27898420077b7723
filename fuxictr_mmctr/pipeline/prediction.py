"""Predict with a trained experiment: a challenge submission zip, or scores for any parquet.

Output paths are checked before the model is loaded: ``--out`` must be a ``.csv`` file in an
existing, writable folder, and the submission's ``submission/<expid>.zip`` must not be a folder.
A bad path is one ``error:`` line and nothing is written.
"""
from __future__ import annotations

import logging
import os
import zipfile

import numpy as np

from fuxictr_mmctr import fileio
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
    from fuxictr_mmctr.training.resume import check_weights_record

    resolve_device(gpu)
    if os.path.isdir(data_path):
        raise UserError(f"{data_path}: is a folder, expected a parquet file")
    if not os.path.exists(data_path):
        raise UserError(f"{data_path} not found")
    params = load_params(config_dir, expid, gpu)
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    if not os.path.exists(model.checkpoint):
        raise UserError(f"no trained model for expid {expid} at {model.checkpoint}; "
                        f"train it first: python run_expid.py --expid {expid}")
    check_weights_record(model.checkpoint, model.run_signature)
    model.load_weights(model.checkpoint)
    # Read with the trained dataset's schema and item-id mapping, wherever the file lives, and
    # trimmed to each batch's longest history as evaluation is (when that is exact).
    loader = make_loader(params, catalogue, data_path, train=False, device=model.device,
                         trim_history=model.trims_history)
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


def check_scores_out(out: str) -> None:
    """``--out`` must name a ``.csv`` file in an existing, writable folder (checked before any
    work, so a bad path costs no prediction and leaves nothing behind)."""
    if os.path.isdir(out):
        raise UserError(f"--out {out}: is a folder; give a file name ending in .csv")
    if not out.lower().endswith(".csv"):
        raise UserError(f"--out {out}: the scores are written as CSV; give a file name ending "
                        f"in .csv")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise UserError(f"--out {out}: folder {folder} {what}")
    reason = fileio.unwritable_reason(folder)
    if reason is not None:
        raise UserError(f"--out {out}: cannot write there ({reason})")


def check_submission_out(zip_path: str) -> None:
    """The submission zip's path must be free for a file, its folder creatable and writable."""
    if os.path.isdir(zip_path):
        raise UserError(f"{zip_path}: is a folder where the submission zip goes; move it away")
    reason = fileio.unwritable_reason(os.path.dirname(os.path.abspath(zip_path)))
    if reason is not None:
        raise UserError(f"cannot write the submission {zip_path}: {reason}")


def check_data(data_path: str) -> None:
    """``--data`` must be a parquet file (its content is checked when it is read)."""
    if os.path.isdir(data_path):
        raise UserError(f"--data {data_path}: is a folder; give a parquet file")
    if not os.path.exists(data_path):
        raise UserError(f"--data {data_path}: file not found")
    if not os.path.isfile(data_path):  # a pipe or a device would block the read forever
        raise UserError(f"--data {data_path}: is not a regular file; give a parquet file")


def run_prediction(config_dir: str, expid: str | None, gpu: int = -1, data: str | None = None,
                   out: str | None = None, artifact: str | None = None) -> str:
    """Score the test split (submission zip) or ``data`` (CSV at ``out``); return the path written.

    With ``artifact`` (a folder made by ``fuxictr-mmctr export``) instead of ``expid``, ``data``
    is scored with the artifact alone (:mod:`fuxictr_mmctr.serving.scoring`): no config folder,
    no checkpoint; ``data`` and ``out`` are required.
    """
    from fuxictr_mmctr.pipeline.experiment import load_params

    if expid is not None and artifact is not None:
        raise UserError("give --expid (a trained run) or --artifact (an exported folder), "
                        "not both")
    if expid is None and artifact is None:
        raise UserError("give --expid (a trained run) or --artifact (an exported folder)")
    if (data is None) != (out is None):
        raise UserError("--data and --out go together: pass both or neither")
    if artifact is not None:
        if data is None:
            raise UserError("--artifact scores a parquet file: pass --data X.parquet and "
                            "--out scores.csv")
        return _predict_with_artifact(artifact, data, out)
    if data is None:
        out = os.path.join("submission", f"{expid}.zip")
        check_submission_out(out)
        data = load_params(config_dir, expid, gpu)["test_data"]
        scores = predict_scores(config_dir, expid, gpu, data)
        write_submission(scores, out)
    else:
        check_scores_out(out)
        check_data(data)
        scores = predict_scores(config_dir, expid, gpu, data)
        write_scores_csv(scores, out)
    logging.info("Wrote %d predictions to %s", len(scores), out)
    print(f"wrote {len(scores)} predictions to {out}")
    return out


def _predict_with_artifact(artifact: str, data: str, out: str) -> str:
    """``ID,score`` of ``data`` scored by the artifact folder ``artifact``."""
    from fuxictr_mmctr.serving.artifact import Artifact
    from fuxictr_mmctr.serving.scoring import score_parquet

    check_scores_out(out)
    check_data(data)
    loaded = Artifact.load(artifact)
    scores = score_parquet(artifact, data, artifact=loaded)
    write_scores_csv(scores, out)
    print(f"wrote {len(scores)} predictions to {out} (artifact {artifact}, "
          f"{loaded.signature.format})")
    return out
