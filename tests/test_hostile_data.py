"""Hostile data under a training run: one line naming file, column and row; nothing destroyed.

Each mutation breaks one file of a copy of the tiny synthetic dataset (after a first good run,
so there is a trained checkpoint to protect) and runs the tiny expid again.
"""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.experiment import run_experiment
from tests.builders import inside, working_folder

TINY = "Transformer_DCN_MicroLens_tiny"


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_dataset):
    """A working folder with the tiny data and a finished run of the tiny expid."""
    folder = working_folder(tmp_path_factory.mktemp("trained"), tiny_dataset)
    run_in(folder)
    return folder


def run_in(folder):
    with inside(folder):
        return run_experiment("./config/", TINY, gpu=-1)


def with_column(path, name, transform):
    """Rewrite ``name`` of the parquet at ``path`` with ``transform(list of python values)``."""
    table = pq.read_table(path)
    values = transform(table.column(name).to_pylist())
    index = table.schema.get_field_index(name)
    pq.write_table(table.set_column(index, name, pa.array(values)), path)


def set_row(row, value):
    def transform(values):
        values[row] = value
        return values
    return transform


MUTATIONS = [
    ("train.parquet", "item_seq", set_row(7, [1, 2, 3]),
     "train.parquet, column item_seq, row 7: list has length 3, expected 20"),
    ("valid.parquet", "item_id", set_row(3, 10_000),
     "valid.parquet, column item_id, row 3: item id 10000 is outside item_info (301 rows)"),
    ("train.parquet", "likes_level", set_row(11, 42),
     "train.parquet, column likes_level, row 11: value 42 is outside the vocabulary 0..10"),
    ("train.parquet", "label", set_row(5, None),
     "train.parquet, column label, row 5: value is null"),
    ("item_info.parquet", "item_emb_d128", set_row(4, [float("nan")] * 128),
     "item_info.parquet, column item_emb_d128, row 4: NaN or infinite value"),
]


@pytest.fixture
def broken_copy(trained_dir, tmp_path):
    """A copy of the trained folder (data, checkpoint, log) to break."""
    shutil.copytree(trained_dir, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("file_name, column, transform, message", MUTATIONS,
                         ids=[f"{f}-{c}" for f, c, _, _ in MUTATIONS])
def test_broken_data_is_one_line_and_the_trained_checkpoint_survives(
        broken_copy, file_name, column, transform, message):
    data = broken_copy / "data" / "MicroLens_synth_tiny"
    checkpoint = broken_copy / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.model"
    before = checkpoint.read_bytes()
    with_column(data / file_name, column, transform)
    with pytest.raises(UserError) as error:
        run_in(broken_copy)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert checkpoint.read_bytes() == before
    log = (broken_copy / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.log").read_text()
    assert f"error: {error.value}" in log


def test_a_missing_column_is_named(broken_copy):
    path = broken_copy / "data" / "MicroLens_synth_tiny" / "valid.parquet"
    pq.write_table(pq.read_table(path).drop(["views_level"]), path)
    with pytest.raises(UserError, match="valid.parquet, column views_level: column is missing"):
        run_in(broken_copy)


def train_under_validation_warn(folder) -> str:
    """Train the tiny expid with ``validation: warn``; it learns; returns its log."""
    config = folder / "config" / "dataset_config.yaml"
    datasets = yaml.safe_load(config.read_text())
    datasets["MicroLens_synth_tiny"]["validation"] = "warn"
    config.write_text(yaml.safe_dump(datasets))
    assert run_in(folder)["valid"]["AUC"] > 0.6
    return (folder / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.log").read_text()


def test_validation_warn_logs_a_soft_problem_and_trains(broken_copy):
    """A label of 2 is a contract problem that ``validation: warn`` lets through with a log
    line (BCE still trains on it); the strict default stops on it."""
    data = broken_copy / "data" / "MicroLens_synth_tiny"
    with_column(data / "train.parquet", "label", set_row(9, 2.0))
    with pytest.raises(UserError, match="train.parquet, column label, row 9"):
        run_in(broken_copy)
    log = train_under_validation_warn(broken_copy)
    assert "train.parquet, column label, row 9" in log


def test_ids_are_checked_against_the_item_table_not_only_the_vocabulary(broken_copy):
    """An item_info with fewer items than the vocabulary: ids past its end stop the run."""
    import re

    data = broken_copy / "data" / "MicroLens_synth_tiny"
    info = pq.read_table(data / "item_info.parquet")
    pq.write_table(info.slice(0, 200), data / "item_info.parquet")
    with pytest.raises(UserError) as error:
        run_in(broken_copy)
    found = re.search(r"train.parquet, column (item_id|item_seq), row (\d+)", str(error.value))
    assert found, str(error.value)
    column, row = found.group(1), int(found.group(2))
    values = np.asarray(pq.read_table(data / "train.parquet").column(column).to_pylist()[row])
    assert values.max() >= 200  # the named row does hold an id past the item table


def test_an_item_missing_from_item_info_stops_training_or_warns(broken_copy):
    """A gap in item_info's integer ids would give every row naming that item all-zero item
    features: strict stops naming the ids and how often they occur, warn trains with one line."""
    data = broken_copy / "data" / "MicroLens_synth_tiny"
    info = pq.read_table(data / "item_info.parquet")
    ids = np.asarray(info.column("item_id").to_pylist())
    pq.write_table(info.filter(pa.array(ids != 150)), data / "item_info.parquet")
    train = pq.read_table(data / "train.parquet")
    targets = int((np.asarray(train.column("item_id").to_pylist()) == 150).sum())
    history = int((np.asarray(train.column("item_seq").to_pylist()) == 150).sum())
    assert targets and history  # the tiny data does name item 150 in both columns
    expected = (f"train.parquet: 1 item id missing from item_info "
                f"./data/MicroLens_synth_tiny/item_info.parquet (150; {targets} item_id values; "
                f"{history} item_seq values): their item features would be all zeros")
    with pytest.raises(UserError) as error:
        run_in(broken_copy)
    assert expected in str(error.value) and "validation: warn" in str(error.value)
    log = train_under_validation_warn(broken_copy)
    assert f"WARNING data validation: ./data/MicroLens_synth_tiny/{expected}" in log


def _last_run(log: str) -> str:
    return log[log.rindex(f"======== {TINY}"):]


def test_a_valid_split_of_one_class_stops_before_training_naming_the_file(broken_copy):
    data = broken_copy / "data" / "MicroLens_synth_tiny"
    rows = pq.read_metadata(data / "valid.parquet").num_rows
    with_column(data / "valid.parquet", "label", lambda values: [0.0] * len(values))
    with pytest.raises(UserError) as error:
        run_in(broken_copy)
    assert str(error.value) == (f"./data/MicroLens_synth_tiny/valid.parquet: every label of the "
                                f"valid split is 0 ({rows} rows); AUC, which picks the best "
                                f"checkpoint, needs both classes")
    log = (broken_copy / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.log").read_text()
    assert "Train loss" not in _last_run(log)  # stopped at load time, not after an epoch


def test_a_run_says_what_it_cannot_honour(broken_copy, capsys):
    """No truth.parquet: the result line says why there is no test AUC. A max_len longer than
    the data's histories: one warning line."""
    (broken_copy / "data" / "MicroLens_synth_tiny" / "truth.parquet").unlink()
    model_file = broken_copy / "config" / "model_config" / "Transformer_DCN.yaml"
    text = model_file.read_text()
    assert text.count("    max_len: 20\n") == 1
    model_file.write_text(text.replace("    max_len: 20\n", "    max_len: 30\n"))
    capsys.readouterr()
    run_in(broken_copy)
    results = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("result ")]
    assert len(results) == 1 and " test_AUC=NA(no-truth.parquet) " in results[0], results
    log = _last_run((broken_copy / "checkpoints" / "MicroLens_synth_tiny" /
                     f"{TINY}.log").read_text())
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith("max_len=30 exceed the 20 history positions of the data "
                                "(item_seq in ./data/MicroLens_synth_tiny/train.parquet): the "
                                "model sees 20 positions; set them to at most 20 to say so")
    assert "No test AUC: the test labels (" in log
