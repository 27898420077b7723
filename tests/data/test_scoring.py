"""The submission scorer: AUC of a challenge-format zip, and one clear line for each mistake."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fuxictr_mmctr import cli
from fuxictr_mmctr.data.scoring import score_submission
from fuxictr_mmctr.errors import UserError


@pytest.fixture(scope="module")
def test_truth(tiny_dataset) -> pd.DataFrame:
    truth = pq.read_table(os.path.join(tiny_dataset, "truth.parquet")).to_pandas()
    return truth[truth["split"] == "test"].sort_values("row").reset_index(drop=True)


def oracle_submission(test_truth) -> pd.DataFrame:
    return pd.DataFrame({"ID": np.arange(len(test_truth)), "Task2": test_truth["click_prob"]})


def write_zip(path, frame_or_text, member: str = "prediction.csv") -> str:
    text = frame_or_text if isinstance(frame_or_text, str) else frame_or_text.to_csv(index=False)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)
    return str(path)


def test_oracle_submission_scores_the_oracle_auc(tiny_dataset, test_truth, tmp_path):
    path = write_zip(tmp_path / "sub.zip", oracle_submission(test_truth))
    auc = score_submission(path, tiny_dataset)
    with open(os.path.join(tiny_dataset, "oracle.json"), encoding="utf-8") as handle:
        assert auc == pytest.approx(json.load(handle)["oracle_auc"]["test"], abs=1e-6)
    assert auc == pytest.approx(roc_auc_score(test_truth["label"], test_truth["click_prob"]))


def test_rows_are_matched_by_id_not_position(tiny_dataset, test_truth, tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.random(len(test_truth))
    frame = pd.DataFrame({"ID": np.arange(len(scores)), "Task2": scores})
    shuffled = frame.sample(frac=1.0, random_state=1)
    path = write_zip(tmp_path / "sub.zip", shuffled, member="submission/prediction.csv")
    assert score_submission(path, tiny_dataset) == pytest.approx(
        roc_auc_score(test_truth["label"], scores))


def _with(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    frame = frame.astype({column: object})
    frame.loc[row, column] = value
    return frame


BAD_SUBMISSIONS = {
    "missing Task2": (lambda f: f.drop(columns="Task2"), ["missing column 'Task2'"]),
    "missing ID": (lambda f: f.rename(columns={"ID": "id"}), ["missing column 'ID'"]),
    "too few rows": (lambda f: f.iloc[:-1], ["999 rows, expected 1000"]),
    "duplicate ID": (lambda f: _with(f, "ID", 7, 3),
                     ["column ID, row 7", "duplicate ID 3", "ID 7 is missing"]),
    "ID out of range": (lambda f: _with(f, "ID", 9, 1000), ["column ID, row 9", "outside 0..999"]),
    "ID not integer": (lambda f: _with(f, "ID", 4, "x4"), ["column ID, row 4", "'x4'"]),
    "score not numeric": (lambda f: _with(f, "Task2", 5, "high"),
                          ["column Task2, row 5", "'high' is not a number"]),
    "score NaN": (lambda f: _with(f, "Task2", 6, np.nan), ["column Task2, row 6", "NaN"]),
    "score empty": (lambda f: _with(f, "Task2", 2, ""), ["column Task2, row 2", "missing"]),
    "score inf": (lambda f: _with(f, "Task2", 8, "inf"), ["column Task2, row 8", "infinite"]),
    "score above 1": (lambda f: _with(f, "Task2", 1, 1.5),
                      ["column Task2, row 1", "outside [0, 1]"]),
    "score below 0": (lambda f: _with(f, "Task2", 0, -0.1),
                      ["column Task2, row 0", "outside [0, 1]"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SUBMISSIONS))
def test_bad_submission_is_one_clear_line(case, tiny_dataset, test_truth, tmp_path):
    break_it, expected = BAD_SUBMISSIONS[case]
    path = write_zip(tmp_path / "sub.zip", break_it(oracle_submission(test_truth)))
    with pytest.raises(UserError) as error:
        score_submission(path, tiny_dataset)
    message = str(error.value)
    assert "\n" not in message
    assert "sub.zip:prediction.csv" in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_missing_or_non_zip_or_empty_zip(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="nothere.zip: submission file not found"):
        score_submission(str(tmp_path / "nothere.zip"), tiny_dataset)
    text = tmp_path / "prediction.csv"
    text.write_text("ID,Task2\n0,0.5\n")
    with pytest.raises(UserError, match="prediction.csv: not a zip file"):
        score_submission(str(text), tiny_dataset)
    other = write_zip(tmp_path / "other.zip", "ID,Task2\n0,0.5\n", member="preds.csv")
    with pytest.raises(UserError, match="other.zip: expected one prediction.csv inside, found no"):
        score_submission(other, tiny_dataset)
    empty = write_zip(tmp_path / "empty.zip", "")
    with pytest.raises(UserError, match="not a readable CSV"):
        score_submission(empty, tiny_dataset)


def test_truth_folder_without_truth_file(test_truth, tmp_path):
    path = write_zip(tmp_path / "sub.zip", oracle_submission(test_truth))
    with pytest.raises(UserError, match="no truth.parquet here"):
        score_submission(path, str(tmp_path))
    with pytest.raises(UserError, match="truth folder not found"):
        score_submission(path, str(tmp_path / "missing"))


def test_cli_score(tiny_dataset, test_truth, tmp_path, capsys):
    path = write_zip(tmp_path / "sub.zip", oracle_submission(test_truth))
    with pytest.raises(SystemExit) as done:
        cli.main(["score", path, "--truth", tiny_dataset])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("AUC=0.")
    with pytest.raises(SystemExit) as failed:
        cli.main(["score", str(tmp_path / "none.zip"), "--truth", tiny_dataset])
    assert failed.value.code == 2
    assert "error:" in capsys.readouterr().err
