"""``prediction.py --artifact DIR --data X.parquet --out scores.csv``: the artifact alone."""
from __future__ import annotations

import csv
import os
import re
import shutil

import numpy as np
import pytest

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.prediction import run_prediction
from fuxictr_mmctr.serving.parity import TOLERANCES
from tests.builders import REPO
from tests.serving.conftest import run_script

VALID = os.path.join("data", "MicroLens_synth_tiny", "valid.parquet")


def read_scores(path) -> tuple[list[int], np.ndarray]:
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [int(row["ID"]) for row in rows], np.array([float(row["score"]) for row in rows])


def assert_same_scores(scores, reference):
    tolerance = TOLERANCES["fp32"]
    np.testing.assert_allclose(scores, reference, rtol=tolerance.rtol, atol=tolerance.atol)


def test_scores_from_anywhere_with_the_artifact_alone(pt2_artifact, serving_workdir,
                                                      eager_valid_scores, tmp_path):
    # Another working folder, no config/ there, the artifact and the data copied elsewhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    artifact = shutil.copytree(pt2_artifact, tmp_path / "moved_artifact")
    data = shutil.copy(serving_workdir / VALID, tmp_path / "rows.parquet")
    result = run_script(os.path.join(REPO, "prediction.py"),
                        ["--artifact", str(artifact), "--data", str(data), "--out", "scores.csv"],
                        cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("wrote 1000 predictions to scores.csv")
    ids, scores = read_scores(elsewhere / "scores.csv")
    assert ids == list(range(1000))
    assert_same_scores(scores, eager_valid_scores)
    assert not os.path.exists(tmp_path / ".cache")               # the data folder is left alone


def test_onnx_artifact_gives_the_same_scores(onnx_artifact, serving_workdir, eager_valid_scores,
                                             tmp_path):
    out = tmp_path / "scores.csv"
    run_prediction("unused", None, data=str(serving_workdir / VALID), out=str(out),
                   artifact=str(onnx_artifact))
    ids, scores = read_scores(out)
    assert ids == list(range(1000))
    assert_same_scores(scores, eager_valid_scores)


def test_a_missing_artifact_is_one_error_line(tmp_path, serving_workdir):
    result = run_script(os.path.join(REPO, "prediction.py"),
                        ["--artifact", str(tmp_path / "nothing"), "--data",
                         str(serving_workdir / VALID), "--out", str(tmp_path / "s.csv")],
                        cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nothing'}: artifact folder not found\n"
    assert not (tmp_path / "s.csv").exists()


def broken(tmp_path, pt2_artifact, how):
    folder = shutil.copytree(pt2_artifact, tmp_path / how)
    if how == "no_signature":
        os.remove(folder / "signature.json")
    elif how == "bad_json":
        (folder / "signature.json").write_text("{not json")
    elif how == "bad_signature":
        (folder / "signature.json").write_text('{"format_version": 1, "format": "pt2"}')
    elif how == "no_graph":
        os.remove(folder / "model.pt2")
    elif how == "bad_graph":
        (folder / "model.pt2").write_bytes(b"this is not a pt2 archive")
    return folder


@pytest.mark.parametrize("how, message", [
    ("no_signature", "not an artifact folder (no signature.json)"),
    ("bad_json", "signature.json: not readable as JSON"),
    ("bad_signature", "signature.json: not a valid artifact signature (missing 'inputs')"),
    ("no_graph", "artifact file model.pt2 is missing"),
    ("bad_graph", "model.pt2: cannot load the pt2 graph"),
])
def test_a_broken_artifact_is_one_error_line(tmp_path, pt2_artifact, serving_workdir, how,
                                             message):
    folder = broken(tmp_path, pt2_artifact, how)
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        run_prediction("unused", None, data=str(serving_workdir / VALID),
                       out=str(tmp_path / "s.csv"), artifact=str(folder))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "s.csv").exists()


def test_artifact_and_expid_exclude_each_other(tmp_path):
    with pytest.raises(UserError, match="not both"):
        run_prediction("unused", "X", data="x.parquet", out=str(tmp_path / "s.csv"),
                       artifact="A")
    with pytest.raises(UserError, match="^give --expid"):
        run_prediction("unused", None)
    with pytest.raises(UserError, match="pass --data X.parquet and --out scores.csv"):
        run_prediction("unused", None, artifact="A")


def test_rows_that_break_the_data_contract_are_named(pt2_artifact, serving_workdir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(serving_workdir / VALID)
    items = table.column("item_id").to_pylist()
    items[3] = 5000                                           # beyond the item table
    bad = table.set_column(table.schema.get_field_index("item_id"), "item_id", pa.array(items))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="column item_id, row 3"):
        run_prediction("unused", None, data=str(tmp_path / "bad.parquet"),
                       out=str(tmp_path / "s.csv"), artifact=str(pt2_artifact))
