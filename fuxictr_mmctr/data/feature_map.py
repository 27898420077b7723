"""FuxiCTR FeatureMap for MicroLens-shaped data, with the ``frozen_embedding`` feature type.

FuxiCTR has no registry for feature types (docs/design.md), so the new type is taught to FuxiCTR
through two subclasses used together by :func:`build_feature_map`:

* :class:`MMCTRFeatureProcessor` (a ``fuxictr.preprocess.FeatureProcessor``) turns the dataset
  config's ``feature_cols`` into feature specs. Ids in our data are already integer-coded (item id
  ``i`` is row ``i`` of item_info), so nothing is tokenised: vocabulary sizes come from the
  config or from the dataset's ``schema.json`` and the data is never scanned.
* :class:`MMCTRFeatureMap` (a ``fuxictr.features.FeatureMap``) gives ``frozen_embedding``
  ``pretrain_dim`` columns in the flat column index (the stock ``set_column_index`` knows only
  ``sequence``/``embedding`` widths) and gives the ``item_seq`` history its ``max_len`` columns.

A ``frozen_embedding`` spec, as saved in ``<data_root>/<dataset_id>/feature_map.json``::

    {"item_emb_d128": {"source": "item", "type": "frozen_embedding", "pretrain_dim": 128,
                       "embedding_dim": 128, "projection": "none", "finetune": false,
                       "emb_output_dim": 128}}

``projection`` is ``none`` (the raw vector, so ``embedding_dim`` must equal ``pretrain_dim``),
``linear`` or ``mlp`` (to ``embedding_dim``). ``finetune: true`` makes the vectors trainable.
"""
from __future__ import annotations

import json
import logging
import os

from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor

from fuxictr_mmctr import fileio
from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError

FROZEN_EMBEDDING = "frozen_embedding"
PROJECTIONS = ("none", "linear", "mlp")
#: Feature types whose values are float vectors read from a table (not looked up by id).
VECTOR_TYPES = ("embedding", FROZEN_EMBEDDING)
FEATURE_MAP_FILE = "feature_map.json"


class MMCTRFeatureMap(FeatureMap):
    """FuxiCTR FeatureMap that knows ``frozen_embedding`` and the ``item_seq`` history."""

    def set_column_index(self):
        """Flat column index: vector features take ``pretrain_dim`` columns, lists ``max_len``."""
        idx = 0
        for feature, spec in self.features.items():
            if spec["type"] in VECTOR_TYPES:
                width = int(spec["pretrain_dim"])
            elif spec["type"] == "sequence" or "max_len" in spec:
                width = int(spec["max_len"])
            else:
                self.column_index[feature] = idx
                idx += 1
                continue
            self.column_index[feature] = list(range(idx, idx + width))
            idx += width
        self.input_length = idx
        for label in self.labels:
            self.column_index[label] = idx
            idx += 1

    def update_feature_specs(self, feature_specs):
        """An expid's ``feature_specs`` merged into the specs (FuxiCTR), the projection of each
        vector feature they change checked as the dataset config's is
        (:func:`projection_settings`)."""
        super().update_feature_specs(feature_specs)
        for entry in feature_specs:
            names = entry["name"] if isinstance(entry["name"], list) else [entry["name"]]
            for name in names:
                spec = self.features[name]
                if spec["type"] in VECTOR_TYPES:
                    spec.update(projection_settings(spec, int(spec["pretrain_dim"]),
                                                    f"feature_specs, feature {name}"))

    def item_features(self, use_multimodal: bool = True) -> list[str]:
        """See :func:`item_features`."""
        return item_features(self, use_multimodal)

    def side_features(self) -> list[str]:
        """See :func:`side_features`."""
        return side_features(self)


def projection_settings(col: dict, pretrain_dim: int, where: str) -> dict:
    """The projection keys of a vector feature's spec from its settings ``col``:
    ``{"projection", "projection_bias"[, "embedding_dim", "emb_output_dim"]}``.

    ``projection`` must be one of :data:`PROJECTIONS`; ``none`` keeps the raw vector, so an
    ``embedding_dim`` other than ``pretrain_dim`` is an error (``where`` names the feature).
    """
    default_projection = "linear" if col["type"] == "embedding" else "none"
    projection = str(col.get("projection", default_projection)).lower()
    if projection not in PROJECTIONS:
        raise UserError(f"{where}: projection {col.get('projection')!r} is not one of "
                        f"{', '.join(PROJECTIONS)}")
    settings = {"projection": projection,
                "projection_bias": bool(col.get("projection_bias", True))}
    if projection == "none":
        embedding_dim = int(col.get("embedding_dim", pretrain_dim))
        if embedding_dim != pretrain_dim:
            raise UserError(f"{where}: projection none keeps the raw {pretrain_dim}-d vector "
                            f"but embedding_dim={embedding_dim}; set projection: linear or "
                            f"embedding_dim: {pretrain_dim}")
        settings.update(embedding_dim=embedding_dim, emb_output_dim=embedding_dim)
    elif "embedding_dim" in col:
        settings.update(embedding_dim=int(col["embedding_dim"]),
                        emb_output_dim=int(col["embedding_dim"]))
    return settings


def item_features(feature_map, use_multimodal: bool = True) -> list[str]:
    """Names of ``source: item`` features in feature-map order (item_id included).

    Works on any FuxiCTR FeatureMap. ``use_multimodal=False`` leaves out vector features.
    """
    return [name for name, spec in feature_map.features.items()
            if spec.get("source") == "item" and spec["type"] != "meta"
            and (use_multimodal or spec["type"] not in VECTOR_TYPES)]


def side_features(feature_map) -> list[str]:
    """Non-item, non-meta features (e.g. likes_level, views_level) in feature-map order."""
    return [name for name, spec in feature_map.features.items()
            if spec.get("source") != "item" and spec["type"] != "meta"]


class MMCTRFeatureProcessor(FeatureProcessor):
    """Builds an :class:`MMCTRFeatureMap` from a dataset config without scanning the data.

    Args:
        feature_cols, label_col, dataset_id, data_root: as in FuxiCTR's dataset_config.yaml.
        item_info: path of item_info.parquet; vector dimensions are checked against it.
        dataset_schema: sizes of the data (:class:`~fuxictr_mmctr.data.schema.Schema`), used
            for vocabulary sizes the config leaves out.
    """

    def __init__(self, feature_cols=(), label_col=None, dataset_id=None, data_root="./data/",
                 item_info=None, dataset_schema: contract.Schema | None = None, **kwargs):
        # FuxiCTR evaluates every column's dtype string; vectors and ids may leave it out.
        feature_cols = [dict(col, dtype=col.get("dtype", "float" if col.get("type") in
                                                  VECTOR_TYPES else "int")) for col in feature_cols]
        super().__init__(feature_cols=feature_cols, label_col=label_col or [],
                         dataset_id=dataset_id, data_root=data_root, **kwargs)
        self.feature_map = MMCTRFeatureMap(dataset_id, self.data_dir)
        self.feature_map.labels = [col["name"] for col in self.label_cols]
        self.feature_map.group_id = kwargs.get("group_id")
        self.item_info = item_info
        self.dataset_schema = dataset_schema or contract.MICROLENS_1M_X1
        self._vector_dims = None

    def fit(self, *args, **kwargs):
        """Fill the feature map from the config; ``feature_map.json`` is written by the caller."""
        for col in self.feature_cols:
            if col.get("active", True) is False:
                continue
            kind = col["type"]
            if kind == "meta":
                self.fit_meta_col(col)
            elif kind == "categorical":
                self.fit_id_col(col)
            elif kind == "sequence":
                self.fit_id_col(col, max_len=self._max_len(col))
            elif kind == "numeric":
                self.fit_numeric_col(col)
            elif kind in VECTOR_TYPES:
                self.fit_frozen_embedding_col(col)
            else:
                raise UserError(f"dataset {self.feature_map.dataset_id}: feature {col['name']}: "
                                f"unknown type {kind!r}")
        features = self.feature_map.features
        self.feature_map.total_features = sum(
            spec.get("vocab_size", 1) for name, spec in features.items()
            if spec["type"] != "meta" and "share_embedding" not in spec)
        self.feature_map.num_fields = self.feature_map.get_num_fields()
        self.feature_map.set_column_index()
        return self.feature_map

    # -- one method per feature type ------------------------------------------------------

    def fit_meta_col(self, col, stats_dict=None):
        """Meta columns feed no embedding; the history ``item_seq`` records what it shares."""
        spec = {"type": "meta"}
        if col["name"] == contract.ITEM_SEQ:
            spec.update(share_embedding=contract.ITEM_ID, padding_idx=contract.PADDING_ID,
                        max_len=self._max_len(col))
        self.feature_map.features[col["name"]] = spec

    def fit_id_col(self, col, max_len=None):
        """Integer ids used as raw embedding rows (no tokeniser): record vocab and padding."""
        name = col["name"]
        spec = {"source": col.get("source", ""), "type": col["type"], "remap": False,
                "vocab_size": self._vocab_size(col)}
        # Item ids and tags use 0 as padding by contract; other ids (levels) treat 0 as a value.
        if "padding_idx" in col:
            spec["padding_idx"] = col["padding_idx"]
        elif col.get("source") == "item" or name == contract.ITEM_ID:
            spec["padding_idx"] = contract.PADDING_ID
        if max_len is not None:
            spec["max_len"] = max_len
        for key in ("embedding_dim", "share_embedding", "emb_output_dim"):
            if key in col:
                spec[key] = col[key]
        self.feature_map.features[name] = spec

    def fit_numeric_col(self, col, stats_dict=None):
        """A float scalar per row (or per item when ``source: item``)."""
        spec = {"source": col.get("source", ""), "type": "numeric"}
        if "embedding_dim" in col:
            spec["embedding_dim"] = col["embedding_dim"]
        self.feature_map.features[col["name"]] = spec

    def fit_frozen_embedding_col(self, col):
        """A per-item float vector: check its declared dimensions against item_info."""
        name = col["name"]
        where = f"dataset {self.feature_map.dataset_id}, feature {name}"
        if col.get("source") != "item":
            raise UserError(f"{where}: type {col['type']} needs source: item (vectors come from "
                            f"item_info)")
        table_dim = self._item_vector_dims().get(name)
        if table_dim is None:
            raise UserError(f"{self.item_info}, column {name}: not found in item_info, or not a "
                            f"float vector column")
        pretrain_dim = int(col.get("pretrain_dim", table_dim))
        if pretrain_dim != table_dim:
            raise UserError(f"{self.item_info}, column {name}: config declares pretrain_dim="
                            f"{pretrain_dim} but the vectors have {table_dim} values")
        spec = {"source": "item", "type": col["type"], "pretrain_dim": pretrain_dim,
                "finetune": bool(col.get("finetune", False)),
                **projection_settings(col, pretrain_dim, where)}
        self.feature_map.features[name] = spec

    # -- sizes -----------------------------------------------------------------------------

    def _max_len(self, col) -> int:
        if "max_len" in col:
            return int(col["max_len"])
        if col["name"] == contract.ITEM_TAGS:
            return self.dataset_schema.num_tags_per_item
        if col["name"] == contract.ITEM_SEQ:
            return self.dataset_schema.max_seq_len
        raise UserError(f"dataset {self.feature_map.dataset_id}, feature {col['name']}: "
                        f"max_len is required for a sequence feature")

    def _vocab_size(self, col) -> int:
        """Declared vocab_size, else the dataset schema's size for a contract column."""
        if "vocab_size" in col:
            return int(col["vocab_size"])
        sizes = {
            contract.ITEM_ID: self.dataset_schema.item_vocab,
            contract.ITEM_TAGS: self.dataset_schema.tag_vocab,
            contract.LIKES_LEVEL: self.dataset_schema.level_vocab,
            contract.VIEWS_LEVEL: self.dataset_schema.level_vocab,
            contract.USER_ID: self.dataset_schema.user_vocab,
        }
        if col["name"] in sizes:
            return sizes[col["name"]]
        raise UserError(f"dataset {self.feature_map.dataset_id}, feature {col['name']}: "
                        f"vocab_size is required (ids are used as raw embedding rows)")

    def _item_vector_dims(self) -> dict[str, int]:
        """Length of every float-vector column of item_info, read from one row."""
        if self._vector_dims is None:
            self._vector_dims = item_vector_dims(self.item_info)
        return self._vector_dims


def item_vector_dims(item_info) -> dict[str, int]:
    """``{column: length}`` for the float-list columns of an item_info parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    if item_info is None or not os.path.exists(item_info):
        raise UserError(f"{item_info}: item_info file not found (needed for frozen_embedding "
                        f"features)")
    try:
        parquet = pq.ParquetFile(item_info)
        fields = [field for field in parquet.schema_arrow
                  if (pat.is_list(field.type) or pat.is_large_list(field.type)
                      or pat.is_fixed_size_list(field.type))
                  and pat.is_floating(field.type.value_type)]
        if not fields:
            return {}
        # The item table is row-aligned and fixed-width: row 0 tells the length.
        first = next(parquet.iter_batches(batch_size=1, columns=[f.name for f in fields]))
    except (pa.ArrowException, OSError, StopIteration) as error:
        raise UserError(f"{item_info}: not a readable parquet file ({error})") from None
    return {field.name: len(first.column(field.name)[0].values) for field in fields}


def build_feature_map(dataset_params: dict) -> MMCTRFeatureMap:
    """The FeatureMap of a dataset, written to ``<data_root>/<dataset_id>/feature_map.json``.

    The map is cheap to build (no data scan), so it is always rebuilt from the config and the
    saved file is only rewritten when it differs. Runtime parameters in ``dataset_params``
    (``embedding_dim``, ``group_id``, ``use_features``, ``feature_specs``) are applied through
    FuxiCTR's ``FeatureMap.load``. Vocabulary sizes the config leaves out come from
    ``schema.json`` in the folder of ``train_data`` (MicroLens_1M_x1 sizes when absent). A
    read-only ``<data_root>/<dataset_id>`` falls back to the user cache (:func:`_save_feature_map`).
    """
    try:
        dataset_id = dataset_params["dataset_id"]
        feature_cols = dataset_params["feature_cols"]
    except KeyError as missing:
        raise UserError(f"dataset config: key {missing} is required") from None
    data_root = dataset_params.get("data_root", "./data/")
    folder = os.path.dirname(os.path.abspath(dataset_params.get("train_data") or
                                             os.path.join(data_root, dataset_id, "x")))
    processor = MMCTRFeatureProcessor(
        feature_cols=feature_cols, label_col=dataset_params.get("label_col", []),
        dataset_id=dataset_id, data_root=data_root, item_info=dataset_params.get("item_info"),
        dataset_schema=contract.load_schema(folder), group_id=dataset_params.get("group_id"))
    built = processor.fit()
    json_file = _save_feature_map(built, processor.json_file, dataset_id)
    feature_map = MMCTRFeatureMap(dataset_id, processor.data_dir)
    feature_map.load(json_file, dataset_params)
    return feature_map


def _save_feature_map(built: MMCTRFeatureMap, json_file: str, dataset_id: str) -> str:
    """Save ``built`` to ``json_file`` unless an identical copy is there; return the path used.

    When ``json_file`` (``<data_root>/<dataset_id>/feature_map.json``) cannot be written, e.g.
    its folder is a read-only shared mount, the map goes to the user cache instead
    (:func:`fallback_feature_map_file`), with one log line; when that cannot be written either,
    a :class:`UserError` names both places and the ``data_root`` key to change.
    """
    wanted = [{name: spec} for name, spec in built.features.items()]
    if _saved_features(json_file) == wanted:
        logging.info("feature_map.json is up to date: %s", json_file)
        return json_file
    failure = _write_feature_map(built, json_file)
    if failure is None:
        return json_file
    fallback = fallback_feature_map_file(json_file)
    if _saved_features(fallback) != wanted:
        fallback_failure = _write_feature_map(built, fallback)
        if fallback_failure is not None:
            raise UserError(f"dataset {dataset_id}: {failure}, and {fallback_failure}; set "
                            f"data_root in the dataset config to a writable folder")
    logging.warning("feature_map.json: %s; using %s instead", failure, fallback)
    return fallback


def _write_feature_map(built: MMCTRFeatureMap, json_file: str) -> str | None:
    """Write ``built`` to ``json_file`` atomically; ``None``, or why it cannot be written."""
    folder = os.path.dirname(os.path.abspath(json_file))
    reason = fileio.unwritable_reason(folder)
    if reason is not None:
        return f"cannot write {json_file} ({reason})"
    try:
        with fileio.atomic_path(json_file) as tmp_path:
            built.save(tmp_path)  # FuxiCTR's writer, then an atomic rename
    except UserError as error:  # atomic_path's one-line write error
        return str(error)
    return None


def fallback_feature_map_file(json_file: str) -> str:
    """Where ``feature_map.json`` goes when its folder is read-only: the user cache, keyed by
    the absolute path of that folder so two datasets never share one."""
    folder = os.path.dirname(os.path.abspath(json_file))
    return os.path.join(fileio.user_cache_dir("feature_maps", fileio.folder_key(folder)),
                        os.path.basename(json_file))


def _saved_features(json_file):
    """The ``features`` of a saved feature map; ``None`` when missing or unreadable."""
    if not os.path.isfile(json_file):
        return None
    try:
        with open(json_file, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return None
    return saved.get("features") if isinstance(saved, dict) else None


__all__ = ["FROZEN_EMBEDDING", "MMCTRFeatureMap", "MMCTRFeatureProcessor", "build_feature_map",
           "item_features", "item_vector_dims", "side_features"]
