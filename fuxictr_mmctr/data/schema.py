"""The MicroLens_1M_x1 data contract, stated once.

Every module that reads or writes a dataset imports its column names, dtypes, lengths and
vocabulary sizes from here. A dataset folder holds four parquet files:

=================  ==========================================================================
file               columns
=================  ==========================================================================
train.parquet      user_id, item_seq, likes_level, views_level, item_id, label
valid.parquet      same as train
test.parquet       same without ``label``
item_info.parquet  item_id, item_tags, item_emb_d128
=================  ==========================================================================

Conventions:

* item id ``0`` is padding; real items are ``1..num_items``. Row ``i`` of ``item_info`` is item
  ``i`` and row 0 is all zeros.
* ``item_seq`` is a fixed-length, left-padded list: the most recent item is last and the valid
  positions are ``item_seq > 0``. ``item_tags`` is left-padded the same way.
* ``label`` is 0 or 1. The test split has no label (as in the challenge).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PADDING_ID = 0

# Column names.
USER_ID = "user_id"
ITEM_SEQ = "item_seq"
LIKES_LEVEL = "likes_level"
VIEWS_LEVEL = "views_level"
ITEM_ID = "item_id"
LABEL = "label"
ITEM_TAGS = "item_tags"
ITEM_EMB = "item_emb_d128"

# Split and side-table file names inside a dataset folder.
SPLITS = ("train", "valid", "test")
ITEM_INFO = "item_info"
LABELED_SPLITS = ("train", "valid")


def split_file(split: str) -> str:
    """File name of a split or of the item table, e.g. ``"train"`` -> ``"train.parquet"``."""
    return f"{split}.parquet"


# Real-data sizes (MicroLens_1M_x1).
MAX_SEQ_LEN = 100
NUM_TAGS_PER_ITEM = 5
ITEM_EMB_DIM = 128
LEVEL_VOCAB = 11            # likes_level and views_level take values 0..10
TAG_VOCAB = 11740           # tag ids 0..11739, 0 is padding
NUM_ITEMS = 91717           # real items 1..91717; item_info has NUM_ITEMS + 1 rows
USER_VOCAB = 1_000_001      # user ids up to 1,000,000


@dataclass(frozen=True)
class Column:
    """One column of a split or of the item table.

    ``kind`` is ``"int"`` (one integer per row), ``"int_list"`` (fixed-length integer list),
    ``"float_list"`` (fixed-length float vector) or ``"label"`` (0/1 stored as int or float).
    ``length`` is the list length for list kinds (``None`` for scalars).
    ``vocab`` bounds integer values: ``0 <= value < vocab`` (``None``: no bound beyond >= 0).
    """

    name: str
    kind: str
    length: int | None = None
    vocab: int | None = None


@dataclass(frozen=True)
class Schema:
    """Shape of one dataset: sequence length, table sizes and vocabularies.

    The real challenge data is :data:`MICROLENS_1M_X1`; synthetic presets use smaller sizes
    with the same columns. ``num_items`` counts real items (item_info has ``num_items + 1``
    rows, row 0 being padding).
    """

    max_seq_len: int = MAX_SEQ_LEN
    num_items: int = NUM_ITEMS
    num_tags_per_item: int = NUM_TAGS_PER_ITEM
    item_emb_dim: int = ITEM_EMB_DIM
    tag_vocab: int = TAG_VOCAB
    level_vocab: int = LEVEL_VOCAB
    user_vocab: int = USER_VOCAB

    @property
    def item_vocab(self) -> int:
        """Rows of item_info (real items plus the padding row)."""
        return self.num_items + 1

    def split_columns(self, split: str) -> tuple[Column, ...]:
        """Columns of ``train``/``valid``/``test`` in file order."""
        columns = [
            Column(USER_ID, "int", vocab=self.user_vocab),
            Column(ITEM_SEQ, "int_list", length=self.max_seq_len, vocab=self.item_vocab),
            Column(LIKES_LEVEL, "int", vocab=self.level_vocab),
            Column(VIEWS_LEVEL, "int", vocab=self.level_vocab),
            Column(ITEM_ID, "int", vocab=self.item_vocab),
        ]
        if split in LABELED_SPLITS:
            columns.append(Column(LABEL, "label"))
        return tuple(columns)

    def item_columns(self) -> tuple[Column, ...]:
        """Columns of item_info in file order."""
        return (
            Column(ITEM_ID, "int", vocab=self.item_vocab),
            Column(ITEM_TAGS, "int_list", length=self.num_tags_per_item, vocab=self.tag_vocab),
            Column(ITEM_EMB, "float_list", length=self.item_emb_dim),
        )

    def columns(self, table: str) -> tuple[Column, ...]:
        """Columns of a split name or of ``"item_info"``."""
        if table == ITEM_INFO:
            return self.item_columns()
        if table not in SPLITS:
            raise ValueError(f"unknown table {table!r}; expected one of {SPLITS + (ITEM_INFO,)}")
        return self.split_columns(table)


MICROLENS_1M_X1 = Schema()


def pyarrow_schema(schema: Schema, table: str):
    """The pyarrow schema a writer uses for ``table`` (a split name or ``"item_info"``).

    Integers (and the 0/1 label) are int64 and lists are ``list<int64>`` / ``list<float32>``.
    """
    import pyarrow as pa

    fields = []
    for column in schema.columns(table):
        if column.kind == "int":
            fields.append(pa.field(column.name, pa.int64()))
        elif column.kind == "int_list":
            fields.append(pa.field(column.name, pa.list_(pa.int64())))
        elif column.kind == "float_list":
            fields.append(pa.field(column.name, pa.list_(pa.float32())))
        else:
            fields.append(pa.field(column.name, pa.int64()))
    return pa.schema(fields)


def list_column(matrix: np.ndarray, value_type=None):
    """A fixed-width matrix ``(R, W)`` as the contract's list column (``list<int64>`` for
    integer lists, ``list<float32>`` for vectors: ``value_type``, default float32), without a
    Python loop."""
    import pyarrow as pa

    value_type = pa.float32() if value_type is None else value_type
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    values = pa.array(matrix.reshape(-1).astype(value_type.to_pandas_dtype(), copy=False),
                      type=value_type)
    return pa.ListArray.from_arrays(offsets, values)


SCHEMA_FILE = "schema.json"


def save_schema(schema: Schema, folder) -> None:
    """Record a dataset's sizes in ``folder/schema.json`` (written by the synthetic generator)."""
    import dataclasses
    import json
    import os

    from fuxictr_mmctr.fileio import write_text_atomic

    write_text_atomic(os.path.join(folder, SCHEMA_FILE),
                      json.dumps(dataclasses.asdict(schema), indent=2) + "\n")


def load_schema(folder) -> Schema:
    """The schema of a dataset folder: ``schema.json`` if present, else MicroLens_1M_x1's."""
    import dataclasses
    import json
    import os

    from fuxictr_mmctr.errors import UserError

    path = os.path.join(folder, SCHEMA_FILE)
    if not os.path.exists(path):
        return MICROLENS_1M_X1
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
        known = {field.name for field in dataclasses.fields(Schema)}
        return Schema(**{key: int(value) for key, value in values.items() if key in known})
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: not a valid schema file ({error})") from None
