"""Small hand-built datasets and feature maps, and working folders, shared by the tests."""
from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fuxictr_mmctr.data import schema as contract


TINY = contract.Schema(max_seq_len=8, num_items=30, num_tags_per_item=3, item_emb_dim=16,
                       tag_vocab=20, level_vocab=11, user_vocab=100)


def write_dataset(folder, schema=TINY, num_rows=50, seed=0):
    """A small dataset in the contract's format; returns its raw columns for reference checks.

    Histories have random lengths (left-padded), tags have one padding slot, item 0 is padding.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    contract.save_schema(schema, folder)
    rows = schema.item_vocab
    tags = rng.integers(1, schema.tag_vocab, (rows, schema.num_tags_per_item))
    tags[:, 0] = 0
    tags[0] = 0
    vectors = rng.normal(size=(rows, schema.item_emb_dim)).astype(np.float32)
    vectors[0] = 0
    raw = {"item_info": {contract.ITEM_ID: np.arange(rows), contract.ITEM_TAGS: tags,
                         contract.ITEM_EMB: vectors}}
    for split in contract.SPLITS:
        history = rng.integers(1, rows, (num_rows, schema.max_seq_len))
        lengths = rng.integers(0, schema.max_seq_len + 1, num_rows)
        history[np.arange(schema.max_seq_len)[None, :] < (schema.max_seq_len - lengths)[:, None]] = 0
        columns = {contract.USER_ID: rng.integers(0, schema.user_vocab, num_rows),
                   contract.ITEM_SEQ: history,
                   contract.LIKES_LEVEL: rng.integers(0, schema.level_vocab, num_rows),
                   contract.VIEWS_LEVEL: rng.integers(0, schema.level_vocab, num_rows),
                   contract.ITEM_ID: rng.integers(1, rows, num_rows)}
        if split in contract.LABELED_SPLITS:
            columns[contract.LABEL] = rng.integers(0, 2, num_rows)
        raw[split] = columns
    for table, columns in raw.items():
        write_table(os.path.join(folder, contract.split_file(table)), columns,
                    contract.pyarrow_schema(schema, table))
    return raw


def write_table(path, columns, arrow_schema=None):
    arrays = {name: list(values) if isinstance(values, np.ndarray) and values.ndim > 1 else values
              for name, values in columns.items()}
    pq.write_table(pa.table(arrays, schema=arrow_schema), path)


def dataset_params(folder, **frozen):
    """FuxiCTR dataset params for a folder made by :func:`write_dataset`."""
    folder = os.fspath(folder)
    frozen_col = dict(name=contract.ITEM_EMB, type="frozen_embedding", source="item",
                      dtype="float", **frozen)
    return dict(
        dataset_id=os.path.basename(folder), data_root=os.path.dirname(folder), embedding_dim=8,
        train_data=os.path.join(folder, "train.parquet"),
        item_info=os.path.join(folder, "item_info.parquet"),
        feature_cols=[dict(name=contract.USER_ID, type="meta", dtype="int"),
                      dict(name=contract.ITEM_SEQ, type="meta", dtype="int"),
                      dict(name=[contract.LIKES_LEVEL, contract.VIEWS_LEVEL], type="categorical",
                           dtype="int"),
                      dict(name=contract.ITEM_ID, type="categorical", source="item", dtype="int"),
                      dict(name=contract.ITEM_TAGS, type="sequence", source="item", dtype="int"),
                      frozen_col],
        label_col=dict(name=contract.LABEL, dtype="float"))


def tiny_item_feature_map(pretrain_dim, tags=3, projection="none", embedding_dim=None):
    """An in-memory FeatureMap with item_id, item_tags and a frozen vector (no files)."""
    from fuxictr_mmctr.data.feature_map import MMCTRFeatureMap

    feature_map = MMCTRFeatureMap("tiny", "/nonexistent")
    feature_map.features = {
        contract.ITEM_ID: {"source": "item", "type": "categorical", "vocab_size": 64,
                           "padding_idx": 0},
        contract.ITEM_TAGS: {"source": "item", "type": "sequence", "vocab_size": 20,
                             "max_len": tags, "padding_idx": 0},
        contract.ITEM_EMB: {"source": "item", "type": "frozen_embedding",
                            "pretrain_dim": pretrain_dim, "projection": projection,
                            "embedding_dim": embedding_dim or pretrain_dim, "finetune": False},
    }
    return feature_map


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where the pipeline looks for the tiny synthetic dataset, relative to a working folder.
TINY_DATA = os.path.join("data", "MicroLens_synth_tiny")


def working_folder(folder, tiny_dataset=None, scripts=(), ignore=("tuner",)):
    """A folder laid out like a user's clone: the repository's ``config/`` (without the paths
    ``ignore`` names), the entry ``scripts`` and, when given, a copy of the tiny dataset in
    ``data/MicroLens_synth_tiny``. Returns ``folder``."""
    shutil.copytree(os.path.join(REPO, "config"), os.path.join(folder, "config"),
                    ignore=shutil.ignore_patterns(*ignore))
    for script in scripts:
        shutil.copy(os.path.join(REPO, script), os.path.join(folder, script))
    if tiny_dataset is not None:
        shutil.copytree(tiny_dataset, os.path.join(folder, TINY_DATA))
    return folder


@contextlib.contextmanager
def inside(folder):
    """Run the block with ``folder`` as the working folder (the pipeline's paths are relative)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
