"""The dataset's item ids, decided once: the item table and every split use the same mapping.

The model gathers item features by row, so the item table, the target ``item_id`` and every
``item_seq`` entry must agree on which row an item is. :class:`ItemCatalogue` reads
item_info's ids once per run and decides:

* integer ids that are unique, non-negative and below the ``item_id`` vocabulary are rows
  already, in whatever order item_info stores them (the table scatters each row to its id);
* anything else (string ids, integers too large for the vocabulary) gets an
  :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap`: ids in sorted order become rows 1..N.

It then applies that decision to the item table and to every split it loads, judges every split
by the trained dataset's ``schema.json`` (wherever the file lives), and stops on any split id
beyond the item table. Integer ids with gaps (an item missing from item_info) would give the
rows that name a missing item all-zero item features: such a split is an error naming the
missing ids and how often they occur, or under ``validation: warn`` one warning line, and
under ``validation: off`` it is not looked at.

Example::

    feature_map = build_feature_map(params)
    catalogue = ItemCatalogue.from_params(params, feature_map)
    model = Model(feature_map, item_table=catalogue.item_table(), **params)
    train = catalogue.load_split(params["train_data"])
"""
from __future__ import annotations

import logging
import os

import numpy as np

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.arrays import ITEM_ID_COLUMNS
from fuxictr_mmctr.data.id_remap import ItemIdRemap, ids_are_rows, read_item_ids
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.loader import (
    OFF,
    STRICT,
    SplitArrays,
    check_validation,
    load_split,
    validation_mode,
)
from fuxictr_mmctr.errors import UserError, location

#: Missing item ids a message lists before "..."
SHOWN_MISSING_IDS = 5
#: Rows of a split looked at per step when searching for missing items (bounds the memory).
SCAN_ROWS = 1 << 16


class ItemCatalogue:
    """One dataset's item-id mapping, item table and schema, shared by all its splits.

    Args:
        item_info: path of item_info.parquet.
        feature_map: the dataset's FeatureMap (which item columns the table keeps).
        schema: the trained dataset's sizes; every split is judged by them.
        remap: the id mapping, ``None`` when item ids already are table rows.
        num_rows: rows of the item table (real items + padding row 0, or max id + 1).
        validation: default ``validation`` mode of :meth:`load_split`.
        missing_ids: ids below ``num_rows`` that item_info lacks (``(k,)`` int64, sorted).
        cache_dir: cache root for the parquet reads (``None``: ``<folder>/.cache``).

    Build it with :meth:`from_params` (or :meth:`from_item_info`), not by hand.
    """

    def __init__(self, item_info, feature_map, schema: contract.Schema,
                 remap: ItemIdRemap | None, num_rows: int, validation: str = STRICT,
                 cache_dir=None, missing_ids=None):
        self.item_info = os.fspath(item_info)
        self.feature_map = feature_map
        self.schema = schema
        self.remap = remap
        self.num_rows = int(num_rows)
        self.validation = check_validation(validation)
        self.cache_dir = cache_dir
        self.missing_ids = np.asarray([] if missing_ids is None else missing_ids, dtype=np.int64)
        self._table: ItemTable | None = None

    @classmethod
    def from_params(cls, params: dict, feature_map, cache_dir=None) -> "ItemCatalogue":
        """The catalogue of a FuxiCTR dataset config (``item_info``, ``train_data``,
        ``validation``); the schema is ``schema.json`` beside ``train_data``."""
        item_info = params.get("item_info")
        if not item_info:
            raise UserError(f"dataset {params.get('dataset_id')}: item_info (the path of "
                            f"item_info.parquet) is required")
        schema = contract.load_schema(dataset_folder(params))
        return cls.from_item_info(item_info, feature_map, schema,
                                  validation=validation_mode(params), cache_dir=cache_dir)

    @classmethod
    def from_item_info(cls, item_info, feature_map, schema: contract.Schema,
                       validation: str = STRICT, cache_dir=None) -> "ItemCatalogue":
        """Read item_info's ids once and decide the mapping (see the module docstring)."""
        ids = read_item_ids(item_info)
        item_vocab = item_id_vocab(feature_map, schema)
        missing_ids = None
        if ids_are_rows(ids, item_vocab):
            values = ids.to_numpy(zero_copy_only=False)
            remap, num_rows = None, int(values.max()) + 1
            missing_ids = np.setdiff1d(np.arange(1, num_rows), values)
        else:
            remap = ItemIdRemap(ids, source=os.fspath(item_info))
            num_rows = remap.num_rows
            if num_rows > item_vocab:
                # The id embedding has item_vocab rows: a larger row would index past it.
                raise UserError(f"{location(item_info, contract.ITEM_ID)}: {num_rows - 1} items "
                                f"need an item_id vocab_size of at least {num_rows}, the "
                                f"dataset config gives {item_vocab}")
        if num_rows < 2:
            raise UserError(f"{location(item_info, contract.ITEM_ID)}: item_info holds no item "
                            f"besides padding")
        return cls(item_info, feature_map, schema, remap, num_rows, validation, cache_dir,
                   missing_ids)

    def item_table(self) -> ItemTable:
        """The item table (``num_rows`` rows), read from item_info on first use and kept."""
        if self._table is None:
            self._table = ItemTable.from_item_info(self.item_info, self.feature_map,
                                                   remap=self.remap, cache_dir=self.cache_dir)
        return self._table

    def load_split(self, path, schema: contract.Schema | None = None,
                   validation: str | None = None) -> SplitArrays:
        """A split (or any parquet of the dataset's columns) with this catalogue's mapping.

        ``schema`` defaults to the dataset's (not the file's folder), ``validation`` to the
        catalogue's mode. Ids beyond the item table stop the load in every mode; ids missing
        from item_info stop it under ``strict`` and are one warning line under ``warn``.
        """
        mode = self.validation if validation is None else check_validation(validation)
        split = load_split(path, schema=schema or self.schema, cache_dir=self.cache_dir,
                           remap=self.remap, validation=mode, item_rows=self.num_rows)
        if mode != OFF and self.missing_ids.size:
            self._check_known_items(split, mode)
        return split

    def _check_known_items(self, split: SplitArrays, mode: str) -> None:
        """Stop (``strict``) or warn (``warn``) when ``split`` names items item_info lacks."""
        counts = {name: count_missing(split.columns[name], self.missing_ids, self.num_rows)
                  for name in ITEM_ID_COLUMNS if name in split.columns}
        found = np.unique(np.concatenate([ids for ids, _ in counts.values()]))
        if not found.size:
            return
        shown = ", ".join(str(i) for i in found[:SHOWN_MISSING_IDS])
        more = ", ..." if found.size > SHOWN_MISSING_IDS else ""
        where = "; ".join(f"{count} {name} value{'s' if count != 1 else ''}"
                          for name, (_, count) in counts.items() if count)
        problem = (f"{split.path}: {found.size} item id{'s' if found.size != 1 else ''} "
                   f"missing from item_info {self.item_info} ({shown}{more}; {where}): their "
                   f"item features would be all zeros")
        if mode == STRICT:
            raise UserError(f"{problem}; add the items to item_info, or set validation: warn "
                            f"in the dataset config to train on them anyway")
        logging.getLogger(__name__).warning("data validation: %s; training on them anyway "
                                            "(validation: warn)", problem)


def count_missing(values: np.ndarray, missing_ids: np.ndarray, num_rows: int):
    """``(distinct missing ids found (k,), number of values that are missing ids)`` in
    ``values`` (``(N,)`` or ``(N, L)`` ids below ``num_rows``), scanned in steps of
    :data:`SCAN_ROWS` rows."""
    is_missing = np.zeros(num_rows, dtype=bool)
    is_missing[missing_ids] = True
    found, count = [], 0
    for start in range(0, len(values), SCAN_ROWS):
        hits = np.asarray(values[start:start + SCAN_ROWS])
        hits = hits[is_missing[hits]]
        count += hits.size
        found.append(np.unique(hits))
    return (np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)), count


def dataset_folder(params: dict) -> str:
    """Folder of the dataset's ``train_data`` (else ``<data_root>/<dataset_id>``), where its
    ``schema.json`` lives."""
    train_data = params.get("train_data") or os.path.join(
        params.get("data_root", "./data/"), str(params.get("dataset_id")), "train.parquet")
    return os.path.dirname(os.path.abspath(train_data))


def item_id_vocab(feature_map, schema: contract.Schema) -> int:
    """The ``item_id`` vocabulary size of the feature map (the schema's when it has none)."""
    spec = feature_map.features.get(contract.ITEM_ID, {}) if feature_map is not None else {}
    return int(spec.get("vocab_size", schema.item_vocab))
