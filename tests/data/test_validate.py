"""The dataset validator: a clean tiny dataset passes; each kind of breakage is one precise line."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr import cli
from fuxictr_mmctr.data import validate
from fuxictr_mmctr.data.schema import (
    ITEM_EMB,
    ITEM_ID,
    ITEM_INFO,
    ITEM_SEQ,
    ITEM_TAGS,
    LABEL,
    LIKES_LEVEL,
    SPLITS,
    USER_ID,
    VIEWS_LEVEL,
    Schema,
    pyarrow_schema,
    save_schema,
    split_file,
)
from fuxictr_mmctr.data.validate import Problem, find_problems, validate_dataset, validate_table

SCHEMA = Schema(max_seq_len=8, num_items=50, num_tags_per_item=3, item_emb_dim=4, tag_vocab=20,
                level_vocab=11, user_vocab=100)
ROWS = 40


def clean_columns(table: str, seed: int = 0) -> dict:
    """Column name -> numpy array (2-D for list columns) of a valid ``table``."""
    rng = np.random.default_rng(seed)
    if table == ITEM_INFO:
        rows = SCHEMA.item_vocab
        tags = rng.integers(1, SCHEMA.tag_vocab, size=(rows, SCHEMA.num_tags_per_item))
        tags[np.arange(SCHEMA.num_tags_per_item)[None, :] < rng.integers(0, 3, size=(rows, 1))] = 0
        vectors = rng.standard_normal((rows, SCHEMA.item_emb_dim)).astype(np.float32)
        tags[0], vectors[0] = 0, 0.0
        return {ITEM_ID: np.arange(rows), ITEM_TAGS: tags, ITEM_EMB: vectors}
    length = SCHEMA.max_seq_len
    history = rng.integers(1, SCHEMA.item_vocab, size=(ROWS, length))
    history[np.arange(length)[None, :] < rng.integers(0, length + 1, size=(ROWS, 1))] = 0
    columns = {
        USER_ID: rng.integers(0, SCHEMA.user_vocab, ROWS),
        ITEM_SEQ: history,
        LIKES_LEVEL: rng.integers(0, SCHEMA.level_vocab, ROWS),
        VIEWS_LEVEL: rng.integers(0, SCHEMA.level_vocab, ROWS),
        ITEM_ID: rng.integers(1, SCHEMA.item_vocab, ROWS),
    }
    if table != "test":
        columns[LABEL] = rng.integers(0, 2, ROWS)
    return columns


def write_table(path, table: str, columns: dict, types: dict | None = None) -> None:
    """Write ``columns`` with the contract's types, or ``types[name]`` where given."""
    types = types or {}
    contract = pyarrow_schema(SCHEMA, table)
    arrays, fields = [], []
    for name, values in columns.items():
        arrow_type = types.get(name) or (contract.field(name).type if name in contract.names
                                         else pa.int64())
        if isinstance(values, pa.Array):            # a deliberately wrong type
            arrays.append(values)
            fields.append(pa.field(name, values.type))
            continue
        if isinstance(values, np.ndarray) and values.ndim == 2:
            values = values.tolist()
        arrays.append(pa.array(values, type=arrow_type))
        fields.append(pa.field(name, arrow_type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)


def write_dataset(folder, overrides: dict | None = None) -> None:
    """A clean dataset in ``folder``; ``overrides[table](columns) -> columns`` breaks a table."""
    os.makedirs(folder, exist_ok=True)
    save_schema(SCHEMA, folder)
    for seed, table in enumerate((ITEM_INFO,) + SPLITS):
        columns = clean_columns(table, seed)
        if overrides and table in overrides:
            columns = overrides[table](columns)
        write_table(os.path.join(folder, split_file(table)), table, columns)


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    write_dataset(folder)
    return folder


def broken(tmp_path, table, change):
    """A clean dataset where ``change(columns)`` breaks ``table``: it edits ``columns`` in place
    (numpy arrays, lists, or pyarrow arrays that keep their own type) or returns new columns."""
    def override(columns):
        result = change(columns)
        return result if isinstance(result, dict) else columns
    write_dataset(tmp_path, {table: override})
    return tmp_path


def only_line(problems):
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------------------------------------


def test_clean_dataset_has_no_problems(clean_dir):
    assert validate_dataset(clean_dir) == []
    for table in (ITEM_INFO,) + SPLITS:
        assert validate_table(os.path.join(clean_dir, split_file(table)), table, SCHEMA) == []


def test_clean_data_survives_batch_boundaries(clean_dir, monkeypatch):
    monkeypatch.setattr(validate, "BATCH_ROWS", 7)
    assert validate_dataset(clean_dir) == []


def test_extra_columns_are_allowed(tmp_path):
    def add_column(columns):
        columns["item_title_len"] = np.arange(len(columns[ITEM_ID]))
    assert validate_dataset(broken(tmp_path, ITEM_INFO, add_column)) == []


def set_value(column, row, value, position=None):
    def change(columns):
        if position is None:
            columns[column][row] = value
        else:
            columns[column][row, position] = value
    return change


def set_row(column, row, new_row):
    """Replace one row of a list column (the column becomes a list of lists: may be ragged)."""
    def change(columns):
        rows = columns[column].tolist()
        rows[row] = new_row
        columns[column] = rows
    return change


def replace(column, make):
    """Replace a whole column by ``make(old_values)`` (a pyarrow array keeps its own type)."""
    def change(columns):
        columns[column] = make(columns[column])
    return change


def drop(column):
    def change(columns):
        del columns[column]
    return change


def left_pad(values, length=SCHEMA.max_seq_len):
    return [0] * (length - len(values)) + list(values)


# (table, change, column, row, words in the line)
ROW_CASES = {
    "null scalar": ("train", replace(VIEWS_LEVEL, lambda v: [None if i == 5 else 1
                                                             for i in range(ROWS)]),
                    VIEWS_LEVEL, 5, "null"),
    "null list": ("valid", set_row(ITEM_SEQ, 3, None), ITEM_SEQ, 3, "null"),
    "null list element": ("valid", set_row(ITEM_SEQ, 4, left_pad([1, None, 2])), ITEM_SEQ, 4,
                          "null element"),
    "short sequence": ("train", set_row(ITEM_SEQ, 17, [3] * 7), ITEM_SEQ, 17,
                       "length 7, expected 8"),
    "long sequence": ("test", set_row(ITEM_SEQ, 0, [3] * 9), ITEM_SEQ, 0, "length 9, expected 8"),
    "ragged tags": (ITEM_INFO, set_row(ITEM_TAGS, 3, [1, 2]), ITEM_TAGS, 3, "length 2, expected 3"),
    "short vector": (ITEM_INFO, set_row(ITEM_EMB, 4, [0.5] * 5), ITEM_EMB, 4,
                     "length 5, expected 4"),
    "sequence not left-padded": ("train", set_row(ITEM_SEQ, 12, [0, 5, 0, 0, 0, 0, 0, 7]),
                                 ITEM_SEQ, 12, "not left-padded"),
    "right-padded sequence": ("valid", set_row(ITEM_SEQ, 6, [4, 5, 6, 0, 0, 0, 0, 0]),
                              ITEM_SEQ, 6, "not left-padded"),
    "tags not left-padded": (ITEM_INFO, set_row(ITEM_TAGS, 9, [4, 0, 5]), ITEM_TAGS, 9,
                             "not left-padded"),
    "negative history id": ("valid", set_value(ITEM_SEQ, 9, -1, position=7), ITEM_SEQ, 9,
                            "negative"),
    "negative target id": ("train", set_value(ITEM_ID, 2, -4), ITEM_ID, 2, "negative"),
    "negative user id": ("train", set_value(USER_ID, 8, -1), USER_ID, 8, "negative"),
    "history id outside item_info": ("train", set_value(ITEM_SEQ, 11, 51, position=7),
                                     ITEM_SEQ, 11, "outside item_info (51 rows)"),
    "target id outside item_info": ("test", set_value(ITEM_ID, 2, 51), ITEM_ID, 2,
                                    "item id 51 is outside item_info"),
    "padding target": ("train", set_value(ITEM_ID, 3, 0), ITEM_ID, 3, "padding id"),
    "likes outside vocab": ("valid", set_value(LIKES_LEVEL, 7, 11), LIKES_LEVEL, 7,
                            "outside the vocabulary 0..10"),
    "views outside vocab": ("test", set_value(VIEWS_LEVEL, 1, 99), VIEWS_LEVEL, 1,
                            "value 99 is outside"),
    "user outside vocab": ("test", set_value(USER_ID, 6, 100), USER_ID, 6, "outside"),
    "tag outside vocab": (ITEM_INFO, set_value(ITEM_TAGS, 5, 20, position=2), ITEM_TAGS, 5,
                          "value 20 is outside the vocabulary 0..19"),
    "negative tag": (ITEM_INFO, set_value(ITEM_TAGS, 5, -2, position=2), ITEM_TAGS, 5,
                     "negative"),
    "non-zero padding tags": (ITEM_INFO, set_value(ITEM_TAGS, 0, 7, position=2), ITEM_TAGS, 0,
                              "padding row 0 must be all zeros"),
    "non-zero padding vector": (ITEM_INFO, set_value(ITEM_EMB, 0, 0.1, position=0), ITEM_EMB, 0,
                                "padding row 0 must be all zeros"),
    "NaN in vector": (ITEM_INFO, set_value(ITEM_EMB, 6, np.nan, position=1), ITEM_EMB, 6, "nan"),
    "inf in vector": (ITEM_INFO, set_value(ITEM_EMB, 8, -np.inf, position=3), ITEM_EMB, 8, "-inf"),
    "label 2": ("valid", set_value(LABEL, 1, 2), LABEL, 1, "label is 2, expected 0 or 1"),
    "label 0.5": ("train", replace(LABEL, lambda v: pa.array(np.where(np.arange(ROWS) == 30,
                                                                       0.5, v))),
                  LABEL, 30, "label is 0.5"),
}


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_each_broken_row_is_one_precise_line(tmp_path, case):
    table, change, column, row, words = ROW_CASES[case]
    line = only_line(validate_dataset(broken(tmp_path, table, change)))
    assert line.startswith(f"{split_file(table)}, column {column}, row {row}: "), line
    assert words in line
    assert "more row" not in line


# (table, change, column or None, words): problems of a whole file or column, no row
FILE_CASES = {
    "missing column": ("train", drop(LIKES_LEVEL), LIKES_LEVEL, "column is missing"),
    "missing label": ("valid", drop(LABEL), LABEL, "column is missing"),
    "float user id": ("train", replace(USER_ID, lambda v: pa.array(v * 1.0)), USER_ID,
                      "dtype is double, expected an integer type"),
    "string label": ("valid", replace(LABEL, lambda v: pa.array(v.astype(str))), LABEL,
                     "dtype is string"),
    "float history": ("test", replace(ITEM_SEQ, lambda v: pa.array(v.astype(float).tolist())),
                      ITEM_SEQ, "expected a list of integers"),
    "int vector": (ITEM_INFO, replace(ITEM_EMB, lambda v: pa.array(np.zeros_like(v, int).tolist())),
                   ITEM_EMB, "expected a list of floats"),
    "scalar tags": (ITEM_INFO, replace(ITEM_TAGS, lambda v: pa.array(v[:, 0])), ITEM_TAGS,
                    "expected a list of integers"),
    "empty split": ("test", lambda c: {name: values[:0] for name, values in c.items()}, None,
                    "file has 0 rows"),
    "single item row": (ITEM_INFO, lambda c: {name: values[:1] for name, values in c.items()},
                        None, "at least 2"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_each_broken_file_or_column_is_reported(tmp_path, case):
    table, change, column, words = FILE_CASES[case]
    problems = find_problems(broken(tmp_path, table, change))
    problem = next(p for p in problems if p.file == split_file(table) and p.column == column)
    assert problem.row is None and words in problem.message, problems
    assert len(problems) == 1, problems


def test_missing_and_unreadable_files(tmp_path):
    write_dataset(tmp_path)
    os.remove(tmp_path / "valid.parquet")
    (tmp_path / "test.parquet").write_text("user_id,item_id\n1,2\n")
    lines = validate_dataset(tmp_path)
    assert len(lines) == 2, lines
    assert lines[0] == "valid.parquet: file is missing"
    assert lines[1].startswith("test.parquet: not a readable parquet file (")
    assert only_line(validate_table(tmp_path / "test.parquet", "test", SCHEMA)).startswith(
        f"{tmp_path / 'test.parquet'}: not a readable parquet file")


def test_missing_folder_and_bad_schema_are_lines_not_exceptions(tmp_path):
    missing = tmp_path / "nowhere"
    assert validate_dataset(missing) == [f"{missing}: dataset folder does not exist"]
    write_dataset(tmp_path)
    (tmp_path / "schema.json").write_text("{not json")
    line = only_line(validate_dataset(tmp_path))
    assert line.startswith(f"{tmp_path / 'schema.json'}: not a valid schema file ("), line


def test_many_bad_rows_give_one_line_with_first_row_and_count(tmp_path, monkeypatch):
    def break_rows(columns):
        columns[ITEM_SEQ][[4, 9, 21, 33]] = [1, 0, 0, 0, 0, 0, 0, 2]
        columns[LIKES_LEVEL][[13, 39]] = 12
    folder = broken(tmp_path, "train", break_rows)
    monkeypatch.setattr(validate, "BATCH_ROWS", 5)        # rows counted across batches
    assert find_problems(folder) == [
        Problem("train.parquet", ITEM_SEQ, 4, "not left-padded: padding 0 at position 1 after a "
                                              "non-zero value at position 0", 3),
        Problem("train.parquet", LIKES_LEVEL, 13, "value 12 is outside the vocabulary 0..10", 1),
    ]
    assert str(find_problems(folder)[0]).endswith("position 0 (and 3 more rows)")
    assert str(find_problems(folder)[1]) == ("train.parquet, column likes_level, row 13: "
                                             "value 12 is outside the vocabulary 0..10 "
                                             "(and 1 more row)")


def test_ragged_rows_skip_padding_check_but_other_rows_are_checked(tmp_path):
    def break_rows(columns):
        set_row(ITEM_SEQ, 2, [0, 5, 0])(columns)                 # ragged and badly padded
        columns[ITEM_SEQ][10] = [0, 0, 3, 0, 4, 4, 4, 4]         # right length, badly padded
    lines = validate_dataset(broken(tmp_path, "train", break_rows))
    assert len(lines) == 2, lines
    assert lines[0].startswith("train.parquet, column item_seq, row 2: list has length 3")
    assert lines[1].startswith("train.parquet, column item_seq, row 10: not left-padded")


def test_id_range_follows_the_real_item_table(tmp_path):
    """item_info of 41 rows (schema: 51): ids 41..50 are outside; of 61 rows: ids up to 60 pass."""
    def shrink(columns):
        return {name: values[:41] for name, values in columns.items()}
    folder = broken(tmp_path / "small", ITEM_INFO, shrink)
    train = pq.read_table(folder / "train.parquet")
    expected_bad = int(np.count_nonzero(train[ITEM_ID].to_numpy() >= 41))
    problem = next(p for p in find_problems(folder) if p.file == "train.parquet"
                   and p.column == ITEM_ID)
    assert "outside item_info (41 rows)" in problem.message
    assert problem.more_rows == expected_bad - 1

    def grow(columns):
        rows = 61
        rng = np.random.default_rng(1)
        vectors = rng.standard_normal((rows, SCHEMA.item_emb_dim)).astype(np.float32)
        vectors[0] = 0
        return {ITEM_ID: np.arange(rows), ITEM_TAGS: np.zeros((rows, 3), dtype=int),
                ITEM_EMB: vectors}

    def use_item_60(columns):
        columns[ITEM_ID][0] = 60
    folder = tmp_path / "large"
    write_dataset(folder, {ITEM_INFO: grow, "train": lambda c: use_item_60(c) or c})
    assert validate_dataset(folder) == []
    assert validate_table(folder / "train.parquet", "train", SCHEMA) == []
    assert "outside" in validate_table(folder / "train.parquet", "train", SCHEMA, item_rows=51)[0]


def test_fixed_size_and_int32_lists_are_accepted(tmp_path):
    folder = tmp_path
    write_dataset(folder)
    columns = clean_columns(ITEM_INFO)
    write_table(folder / "item_info.parquet", ITEM_INFO, columns,
                types={ITEM_TAGS: pa.list_(pa.int32(), SCHEMA.num_tags_per_item),
                       ITEM_ID: pa.int32(), ITEM_EMB: pa.list_(pa.float64())})
    assert validate_dataset(folder) == []


# ---------------------------------------------------------------------------------------------
# command line


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code


def test_cli_exit_status(clean_dir, tmp_path, capsys):
    assert run_cli(["validate", str(clean_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{clean_dir}: OK"
    folder = broken(tmp_path, "train", set_row(ITEM_SEQ, 17, [3] * 7))
    assert run_cli(["validate", str(folder)]) == 2
    out = capsys.readouterr()
    assert out.out.startswith("train.parquet, column item_seq, row 17: ")
    assert "1 problem(s)" in out.err


def test_cli_subprocess_reports_without_traceback(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "item_info.parquet").write_bytes(b"PAR1 not really")
    result = subprocess.run([sys.executable, "-m", "fuxictr_mmctr.cli", "validate", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("item_info.parquet: not a readable parquet file")


def test_duplicated_column_is_reported(tmp_path):
    write_dataset(tmp_path)
    labels = pa.array(np.zeros(ROWS, dtype=np.int64))
    train = pq.read_table(tmp_path / "train.parquet").append_column(LABEL, labels)
    pq.write_table(train, tmp_path / "train.parquet")
    assert validate_dataset(tmp_path) == ["train.parquet, column label: column appears 2 times"]


def _shuffled_item_info(columns):
    """item_info with its rows (the padding row included) in another order."""
    order = np.random.default_rng(5).permutation(len(columns[ITEM_ID]))
    return {name: np.asarray(values)[order] for name, values in columns.items()}


def test_item_info_in_another_order_is_a_note_not_a_problem(tmp_path, capsys):
    """Training places each item_info row at its id, so validate agrees: the order is reported
    as information and the exit status is 0; the padding item is the row whose id is 0."""
    folder = broken(tmp_path, ITEM_INFO, _shuffled_item_info)
    assert validate_dataset(folder) == []
    problems, notes = validate.dataset_report(folder)
    assert problems == [] and len(notes) == 1
    assert notes[0].startswith("item_info.parquet, column item_id, row 0: holds item ")
    assert "rows are not in id order, which training accepts" in notes[0]
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["validate", str(folder)])
    assert exit_status.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"note: {notes[0]}", f"{folder}: OK"]


def test_item_info_padding_row_is_found_by_its_id(tmp_path):
    def shuffled_with_tagged_padding(columns):
        columns = _shuffled_item_info(columns)
        columns[ITEM_TAGS][np.flatnonzero(columns[ITEM_ID] == 0)[0], 2] = 7
        return columns

    folder = broken(tmp_path, ITEM_INFO, shuffled_with_tagged_padding)
    padding_row = int(np.flatnonzero(pq.read_table(folder / "item_info.parquet")
                                     .column(ITEM_ID).to_numpy() == 0)[0])
    line = only_line(validate_dataset(folder))
    assert line == (f"item_info.parquet, column item_tags, row {padding_row}: padding row 0 "
                    f"must be all zeros")


def test_an_item_missing_from_item_info_is_a_problem_of_the_splits_naming_it(tmp_path):
    """A gap in item_info's ids: every split row naming the missing item is reported, as
    training stops on it."""
    def without_item_7(columns):
        keep = columns[ITEM_ID] != 7
        return {name: np.asarray(values)[keep] for name, values in columns.items()}

    folder = broken(tmp_path, ITEM_INFO, without_item_7)
    problems = validate_dataset(folder)
    assert problems, "item 7 is named by the splits"
    for line in problems:
        assert "item id 7 is not in item_info (its item features would be all zeros)" in line
        assert line.split(",")[0] in ("train.parquet", "valid.parquet", "test.parquet"), line


def test_a_duplicate_item_id_is_a_problem(tmp_path):
    """Item 4 twice (and so item 3 missing): the duplicate is named where training names it."""
    problems = validate_dataset(broken(tmp_path, ITEM_INFO, set_value(ITEM_ID, 3, 4)))
    item_info_lines = [line for line in problems if line.startswith("item_info.parquet")]
    assert item_info_lines == [
        "item_info.parquet, column item_id, row 4: item id 4 appears more than once"]
