"""fuxictr-mmctr items: per-item levels on the right rows, deterministic PCA vectors, one-line
errors that leave no output, and a result that validate accepts."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr import cli
from fuxictr_mmctr.data.item_features import (
    ITEM_LIKES_LEVEL,
    ITEM_VIEWS_LEVEL,
    VectorOptions,
    build_item_table,
    fit_pca,
    is_current,
)
from fuxictr_mmctr.data.schema import (ITEM_EMB, ITEM_ID, ITEM_TAGS, LIKES_LEVEL, VIEWS_LEVEL,
                                        list_column)
from fuxictr_mmctr.data.synthetic import IMAGE_EMB, RAW_ITEM_FILE, TEXT_EMB
from fuxictr_mmctr.data.validate import validate_dataset
from fuxictr_mmctr.errors import UserError

QUIET = {"say": lambda _: None}


@pytest.fixture()
def raw(tiny_dataset, tmp_path):
    """Copies of the tiny synthetic raw item file and item_info: ``(item_feature, item_info)``."""
    for name in (RAW_ITEM_FILE, "item_info.parquet"):
        shutil.copy(os.path.join(tiny_dataset, name), tmp_path / name)
    return str(tmp_path / RAW_ITEM_FILE), str(tmp_path / "item_info.parquet")


def column(path, name) -> np.ndarray:
    values = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    if pa.types.is_list(values.type):
        return values.flatten().to_numpy().reshape(len(values), -1)
    return values.to_numpy()


def rewrite(path, table: pa.Table):
    pq.write_table(table, path)


def replace_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def run_cli(*argv):
    """``fuxictr-mmctr items ...``: its exit status."""
    try:
        cli.main(["items", *argv])
    except SystemExit as stop:
        return stop.code
    return 0


# ------------------------------------------------------------------------- levels


def test_levels_land_on_the_rows_of_their_items(raw, tmp_path):
    item_feature, item_info = raw
    out = str(tmp_path / "out.parquet")
    build_item_table(item_feature, item_info, out, **QUIET)
    raw_ids = column(item_feature, ITEM_ID)
    for raw_name, out_name in ((LIKES_LEVEL, ITEM_LIKES_LEVEL), (VIEWS_LEVEL, ITEM_VIEWS_LEVEL)):
        levels = column(out, out_name)
        assert levels.dtype == np.int64 and len(levels) == len(raw_ids) + 1
        assert levels[0] == 0  # the padding row
        expected = np.zeros(len(raw_ids) + 1, dtype=np.int64)
        expected[raw_ids] = column(item_feature, raw_name)
        np.testing.assert_array_equal(levels, expected)
    # item_info's own columns are kept, in its order, bytes for bytes
    before, after = pq.read_table(item_info), pq.read_table(out)
    assert after.column_names == before.column_names + [ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL]
    assert after.select(before.column_names).equals(before)


def test_rows_follow_item_info_whatever_order_either_file_has(raw, tmp_path):
    item_feature, item_info = raw
    rng = np.random.default_rng(0)
    info = pq.read_table(item_info)
    rewrite(item_info, info.take(rng.permutation(len(info))))
    raw_table = pq.read_table(item_feature)
    rewrite(item_feature, raw_table.take(rng.permutation(len(raw_table))))
    out = str(tmp_path / "out.parquet")
    build_item_table(item_feature, item_info, out, **QUIET)
    ids = column(out, ITEM_ID)
    np.testing.assert_array_equal(ids, column(item_info, ITEM_ID))
    by_id = dict(zip(column(item_feature, ITEM_ID), column(item_feature, LIKES_LEVEL)))
    likes = column(out, ITEM_LIKES_LEVEL)
    assert likes[ids == 0] == 0
    assert all(likes[row] == by_id[item] for row, item in enumerate(ids) if item != 0)


def test_running_on_an_enriched_table_replaces_its_columns(raw, tmp_path):
    item_feature, item_info = raw
    first, second = str(tmp_path / "first.parquet"), str(tmp_path / "second.parquet")
    build_item_table(item_feature, item_info, first, **QUIET)
    build_item_table(item_feature, first, second, **QUIET)
    assert pq.read_table(second).column_names == pq.read_table(first).column_names
    np.testing.assert_array_equal(column(second, ITEM_LIKES_LEVEL), column(first, ITEM_LIKES_LEVEL))


# ------------------------------------------------------------------------- PCA vectors


def test_pca_vectors_are_deterministic_of_the_asked_width_with_zero_padding(raw, tmp_path):
    item_feature, item_info = raw
    one, two = str(tmp_path / "one.parquet"), str(tmp_path / "two.parquet")
    # the modalities listed in another order: the same options, the same bytes
    for out, modalities in ((one, ("text", "image")), (two, ("image", "text"))):
        build_item_table(item_feature, item_info, out, VectorOptions(modalities, dim=24), **QUIET)
    with open(one, "rb") as a, open(two, "rb") as b:
        assert a.read() == b.read()
    vectors = column(one, "item_emb_pca24")
    assert vectors.shape == (301, 24) and vectors.dtype == np.float32
    assert not vectors[0].any()
    # centred, and the components come in decreasing variance
    np.testing.assert_allclose(vectors[1:].mean(axis=0), 0, atol=1e-4)
    spread = vectors[1:].var(axis=0)
    assert np.all(np.diff(spread) <= 1e-3 * spread[0])


def test_pca_matches_sklearn_up_to_sign_and_fixes_the_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    features = (rng.normal(size=(400, 12)) * np.linspace(3, 0.5, 12)).astype(np.float32)
    pca = fit_pca(features, 5)
    ours = pca.transform(features)
    theirs = PCA(n_components=5, svd_solver="full").fit_transform(features.astype(np.float64))
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-4, atol=1e-4)
    largest = np.abs(pca.components).argmax(axis=0)
    assert np.all(pca.components[largest, np.arange(5)] > 0)
    whitened = pca.transform(features, whiten=True)
    np.testing.assert_allclose(whitened.std(axis=0, ddof=1), 1, rtol=1e-4)


def test_modalities_and_whitening_change_the_vectors(raw, tmp_path):
    item_feature, item_info = raw
    outputs = {}
    for name, options in {"both": VectorOptions(("text", "image"), 8),
                          "text": VectorOptions(("text",), 8),
                          "image": VectorOptions(("image",), 8),
                          "white": VectorOptions(("text", "image"), 8, whiten=True)}.items():
        out = str(tmp_path / f"{name}.parquet")
        build_item_table(item_feature, item_info, out, options, **QUIET)
        outputs[name] = column(out, "item_emb_pca8")
    for a, b in (("both", "text"), ("both", "image"), ("text", "image"), ("both", "white")):
        assert not np.allclose(outputs[a], outputs[b])
    np.testing.assert_allclose(outputs["white"][1:].std(axis=0, ddof=1), 1, rtol=1e-3)


def test_vectors_from_a_file_of_their_own(raw, tmp_path):
    item_feature, item_info = raw
    table = pq.read_table(item_feature)
    vectors_file = str(tmp_path / "item_emb.parquet")
    rewrite(vectors_file, table.select([ITEM_ID, TEXT_EMB, IMAGE_EMB]).take(
        np.arange(len(table))[::-1]))
    rewrite(item_feature, table.drop_columns([TEXT_EMB, IMAGE_EMB]))
    combined, split = str(tmp_path / "combined.parquet"), str(tmp_path / "split.parquet")
    options = VectorOptions(("text",), 8)
    build_item_table(item_feature, item_info, split, options, vectors_file=vectors_file, **QUIET)
    rewrite(str(tmp_path / "raw_again.parquet"), table)
    build_item_table(str(tmp_path / "raw_again.parquet"), item_info, combined, options, **QUIET)
    # the vectors file is stored in reverse: the PCA fit sees another row order, same subspace
    np.testing.assert_allclose(column(split, "item_emb_pca8"), column(combined, "item_emb_pca8"),
                               rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------- the command


def test_the_command_writes_the_table(raw, tmp_path, capsys):
    item_feature, item_info = raw
    out = str(tmp_path / "sub" / "item_info.parquet")
    assert run_cli("--item-feature", item_feature, "--item-info", item_info, "--out", out,
                   "--vectors", "text,image", "--dim", "16", "--whiten") == 0
    printed = capsys.readouterr().out
    assert "item_emb_pca16 from text+image" in printed and "whitened" in printed
    assert pq.read_schema(out).names[-3:] == [ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL, "item_emb_pca16"]
    assert is_current(out, item_feature, item_info, VectorOptions(("text", "image"), 16, True))
    assert not is_current(out, item_feature, item_info, VectorOptions(("text", "image"), 16))
    assert not is_current(out, item_feature, item_info)


def test_validate_accepts_the_result_and_checks_the_new_columns(raw, tiny_dataset, tmp_path):
    item_feature, item_info = raw
    folder = tmp_path / "dataset"
    folder.mkdir()
    for name in ("train.parquet", "valid.parquet", "test.parquet", "schema.json"):
        shutil.copy(os.path.join(tiny_dataset, name), folder / name)
    out = str(folder / "item_info.parquet")
    build_item_table(item_feature, item_info, out, VectorOptions(("text",), 8), **QUIET)
    assert validate_dataset(folder) == []

    table = pq.read_table(out)
    likes = column(out, ITEM_LIKES_LEVEL).copy()
    likes[4] = 11
    vectors = column(out, "item_emb_pca8").copy()
    vectors[0, 2] = 1.0
    table = replace_column(table, ITEM_LIKES_LEVEL, pa.array(likes))
    rewrite(out, replace_column(table, "item_emb_pca8", list_column(vectors)))
    problems = validate_dataset(folder)
    assert "item_info.parquet, column item_likes_level, row 4: value 11 is outside the " \
           "vocabulary 0..10" in problems
    assert "item_info.parquet, column item_emb_pca8, row 0: padding row 0 must be all zeros" \
           in problems


# ------------------------------------------------------------------------- errors


def broken_raw(item_feature, change):
    """Rewrite the raw item file with ``change(table) -> table``."""
    rewrite(item_feature, change(pq.read_table(item_feature)))


def with_vector_row(table, name, row, values):
    vectors = table.column(name).to_pylist()
    vectors[row] = values
    return replace_column(table, name, pa.array(vectors, pa.list_(pa.float32())))


ERRORS = {
    "missing level column": (
        lambda t: t.drop_columns([VIEWS_LEVEL]), (),
        "item_feature.parquet, column views_level: column is missing"),
    "missing vector column": (
        lambda t: t.drop_columns([IMAGE_EMB]), ("--vectors", "text,image"),
        "item_feature.parquet, column img_emb_CLIPRN50: column is missing"),
    "item of item_info missing from the raw file": (
        lambda t: t.slice(0, len(t) - 1), (),
        "item_info.parquet, column item_id, row 300: item id 300 is not in"),
    "raw item missing from item_info": (
        lambda t: pa.concat_tables([t, replace_column(t.slice(len(t) - 1), ITEM_ID,
                                                      pa.array([len(t) + 1]))]), (),
        "item_feature.parquet, column item_id, row 300: item id 301 is not in"),
    "raw ids of another catalogue": (
        lambda t: replace_column(t, ITEM_ID, pc.add(t.column(ITEM_ID), 1000)), (),
        "item_info.parquet, column item_id, row 1: item id 1 is not in"),
    "repeated raw id": (
        lambda t: replace_column(t, ITEM_ID, pa.array([1] + list(range(1, len(t))))), (),
        "item_feature.parquet, column item_id, row 1: item id 1 appears more than once"),
    "padding id in the raw file": (
        lambda t: replace_column(t, ITEM_ID, pa.array([0] + list(range(2, len(t) + 1)))), (),
        "item_feature.parquet, column item_id, row 0: item id 0 is padding"),
    "string ids against integer ids": (
        lambda t: replace_column(t, ITEM_ID, pc.cast(t.column(ITEM_ID), pa.string())), (),
        "item_feature.parquet, column item_id: item ids are strings but those of"),
    "wrong vector width": (
        lambda t: with_vector_row(t, TEXT_EMB, 7, [0.5] * 767), ("--vectors", "text"),
        "item_feature.parquet, column txt_emb_BERT, row 7: list has length 767, expected 768"),
    "NaN in a vector": (
        lambda t: with_vector_row(t, IMAGE_EMB, 9, [float("nan")] * 1024), ("--vectors", "image"),
        "item_feature.parquet, column img_emb_CLIPRN50, row 9: NaN or infinite value"),
    "null level": (
        lambda t: replace_column(t, LIKES_LEVEL, pa.array([None] + t.column(LIKES_LEVEL)
                                                          .to_pylist()[1:], pa.int64())), (),
        "item_feature.parquet, column likes_level, row 0: missing value"),
    "level out of range": (
        lambda t: replace_column(t, LIKES_LEVEL, pa.array([3, 12] + t.column(LIKES_LEVEL)
                                                          .to_pylist()[2:])), (),
        "item_feature.parquet, column likes_level, row 1: value 12 is out of range [0, 11)"),
    "too many dimensions": (
        lambda t: t, ("--vectors", "text", "--dim", "400"),
        "--dim 400 is more than 300 items and 768 features allow (at most 299)"),
    "unknown modality": (
        lambda t: t, ("--vectors", "text,audio"), "items: unknown modality 'audio'"),
    "PCA options without --vectors": (
        lambda t: t, ("--whiten",), "add --vectors text,image"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_one_line_and_leaves_the_previous_output(raw, tmp_path, capsys, case):
    item_feature, item_info = raw
    change, extra, message = ERRORS[case]
    out = tmp_path / "out" / "item_info_levels.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    broken_raw(item_feature, change)
    assert run_cli("--item-feature", item_feature, "--item-info", item_info, "--out", str(out),
                   *extra) == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error: "), stderr
    assert message in stderr[0]
    assert out.read_bytes() == b"previous"
    assert os.listdir(out.parent) == [out.name]  # no temporary file left behind


@pytest.mark.parametrize("case", ["missing file", "not parquet", "item_info without item_id",
                                  "item_info with a repeated id", "out is an input",
                                  "out is a folder"])
def test_bad_paths_are_one_line(raw, tmp_path, capsys, case):
    item_feature, item_info = raw
    out = str(tmp_path / "out.parquet")
    if case == "missing file":
        item_feature, message = str(tmp_path / "absent.parquet"), "absent.parquet: file not found"
    elif case == "not parquet":
        with open(item_feature, "w", encoding="utf-8") as handle:
            handle.write("item_id,likes_level\n1,3\n")
        message = "item_feature.parquet: not a readable parquet file"
    elif case == "item_info without item_id":
        rewrite(item_info, pq.read_table(item_info).drop_columns([ITEM_ID]))
        message = "item_info.parquet, column item_id: column is missing"
    elif case == "item_info with a repeated id":
        table = pq.read_table(item_info)
        ids = table.column(ITEM_ID).to_numpy().copy()
        ids[7] = 3
        rewrite(item_info, replace_column(table, ITEM_ID, pa.array(ids)))
        message = "item_info.parquet, column item_id, row 7: item id 3 appears more than once"
    elif case == "out is an input":
        out, message = item_info, "is one of the input files"
    else:
        out, message = str(tmp_path), "is a folder; --out takes the output parquet file"
    assert run_cli("--item-feature", item_feature, "--item-info", item_info, "--out", out) == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and message in stderr[0], stderr


def test_vector_options_are_checked():
    with pytest.raises(UserError, match="positive integer"):
        VectorOptions(("text",), dim=0)
    with pytest.raises(UserError, match="unknown modality"):
        VectorOptions(())
    assert VectorOptions(("image", "text")).modalities == ("text", "image")
    assert VectorOptions(dim=64).column == "item_emb_pca64"


def test_item_tags_and_vectors_of_item_info_are_not_needed_beyond_item_id(raw, tmp_path):
    """A bare item_info (ids only) is enough: the table is item_info plus the new columns."""
    item_feature, item_info = raw
    rewrite(item_info, pq.read_table(item_info).drop_columns([ITEM_TAGS, ITEM_EMB]))
    out = str(tmp_path / "out.parquet")
    build_item_table(item_feature, item_info, out, **QUIET)
    assert pq.read_schema(out).names == [ITEM_ID, ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL]
