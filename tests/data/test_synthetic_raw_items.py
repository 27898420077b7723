"""The raw item file (item_feature.parquet): columns, item levels, determinism, readable topics."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_INFO, ITEM_TAGS, LIKES_LEVEL, VIEWS_LEVEL
from fuxictr_mmctr.data.synthetic import (
    IMAGE_EMB,
    IMAGE_EMB_DIM,
    ITEM_TITLE,
    ORACLE_FILE,
    PRESETS,
    RAW_ITEM_COLUMNS,
    RAW_ITEM_FILE,
    TEXT_EMB,
    TEXT_EMB_DIM,
    WORLD_STREAM,
    generate,
    random_stream,
    raw_item_schema,
)
from fuxictr_mmctr.data.synthetic_world import build_world

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def raw_items(tiny_dataset):
    return pq.read_table(os.path.join(tiny_dataset, RAW_ITEM_FILE))


def dataset_seed(folder) -> int:
    with open(os.path.join(folder, ORACLE_FILE), encoding="utf-8") as handle:
        return json.load(handle)["seed"]


@pytest.fixture(scope="module")
def world(tiny_dataset):
    """The items of the shared tiny dataset, drawn again from its seed."""
    return build_world(TINY, random_stream(dataset_seed(tiny_dataset), WORLD_STREAM))


def vector_matrix(table, column: str) -> np.ndarray:
    """A list<float32> column as ``(rows, width) float32``."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(values), -1)


def test_columns_types_widths_and_rows(raw_items):
    assert raw_items.column_names == list(RAW_ITEM_COLUMNS)
    assert raw_items.schema.equals(raw_item_schema(), check_metadata=False)
    assert raw_items.num_rows == TINY.schema.num_items
    assert np.array_equal(raw_items.column(ITEM_ID).to_numpy(),
                          np.arange(1, TINY.schema.num_items + 1))
    assert vector_matrix(raw_items, TEXT_EMB).shape == (TINY.schema.num_items, TEXT_EMB_DIM)
    assert vector_matrix(raw_items, IMAGE_EMB).shape == (TINY.schema.num_items, IMAGE_EMB_DIM)
    assert vector_matrix(raw_items, TEXT_EMB).dtype == np.float32
    titles = raw_items.column(ITEM_TITLE).to_pylist()
    assert all(3 <= len(title.split()) <= 6 for title in titles)


def test_levels_are_the_rounded_item_levels(raw_items, world):
    expected = np.rint(world.item_levels[1:]).astype(np.int64)
    assert np.array_equal(raw_items.column(LIKES_LEVEL).to_numpy(), expected[:, 0])
    assert np.array_equal(raw_items.column(VIEWS_LEVEL).to_numpy(), expected[:, 1])
    levels = raw_items.column(LIKES_LEVEL).to_numpy()
    assert levels.min() >= 0 and levels.max() < TINY.schema.level_vocab
    assert len(np.unique(levels)) > 4


def test_tag_strings_list_the_item_info_tags(raw_items, tiny_dataset):
    info = pq.read_table(os.path.join(tiny_dataset, f"{ITEM_INFO}.parquet"))
    tags = info.column(ITEM_TAGS).to_pylist()[1:]
    written = raw_items.column(ITEM_TAGS).to_pylist()
    assert written == [" ".join(str(tag) for tag in row if tag > 0) for row in tags]


def test_same_seed_same_bytes(tmp_path):
    for name in ("a", "b"):
        generate("tiny", seed=5, out_dir=str(tmp_path / name), verbose=False)
    first, second = ((tmp_path / name / RAW_ITEM_FILE).read_bytes() for name in ("a", "b"))
    assert first == second


def nearest_centroid_accuracy(vectors: np.ndarray, topics: np.ndarray) -> float:
    """Accuracy of the nearest topic centroid, centroids fitted on even rows, tested on odd."""
    fit, held_out = np.arange(0, len(topics), 2), np.arange(1, len(topics), 2)
    labels = np.unique(topics)
    centroids = np.stack([vectors[fit][topics[fit] == label].mean(axis=0) for label in labels])
    distance = ((vectors[held_out, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return float(np.mean(labels[distance.argmin(axis=1)] == topics[held_out]))


@pytest.mark.parametrize("column", [TEXT_EMB, IMAGE_EMB])
def test_topic_is_recoverable_from_each_vector(raw_items, world, column):
    topics = world.item_topic[1:]
    accuracy = nearest_centroid_accuracy(vector_matrix(raw_items, column).astype(np.float64),
                                         topics)
    chance = 1 / TINY.num_topics
    assert accuracy > max(0.6, 3 * chance), accuracy
    shuffled = nearest_centroid_accuracy(vector_matrix(raw_items, column).astype(np.float64),
                                         np.random.default_rng(0).permutation(topics))
    assert shuffled < accuracy - 0.3


def test_titles_of_a_topic_share_words(raw_items, world):
    words = [set(title.split()) for title in raw_items.column(ITEM_TITLE).to_pylist()]
    topics = world.item_topic[1:]
    same, other = [], []
    for first in range(0, len(words), 3):
        for second in range(first + 1, len(words), 7):
            shares = bool(words[first] & words[second])
            (same if topics[first] == topics[second] else other).append(shares)
    assert np.mean(same) > 0.3
    assert np.mean(same) > 3 * np.mean(other)


def test_a_folder_without_the_raw_file_is_made_again(tiny_dataset, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(tiny_dataset, folder)
    (folder / RAW_ITEM_FILE).unlink()                 # as written before the file existed
    generate("tiny", seed=dataset_seed(folder), out_dir=str(folder), overwrite=False)
    assert "incomplete copy" in capsys.readouterr().out
    assert (folder / RAW_ITEM_FILE).is_file()
