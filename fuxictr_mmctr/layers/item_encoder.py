"""ItemEncoder: one vector per item id, shared by the target item and every history item."""
from __future__ import annotations

import torch
from torch import nn

from fuxictr_mmctr.data.feature_map import VECTOR_TYPES, item_features
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.schema import ITEM_ID, PADDING_ID
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.embedding import (
    DEFAULT_INITIALIZER,
    ID_TYPES,
    feature_dim,
    id_embedding_dict,
    masked_mean,
    vector_projection,
)

GATHER_MODES = ("auto", "table", "rows")


class ItemEncoder(nn.Module):
    """Item representation: concat over ``source: item`` features, in feature-map order, of

    * ``item_id`` -> id embedding ``(embedding_dim)``; trainable, padding row 0 is zeros;
    * an id list (``item_tags``) -> mean of its embeddings over non-padding ids ``(embedding_dim)``;
    * a ``frozen_embedding`` vector -> the raw vector (``projection: none``) or its
      Linear/MLP projection to the feature's ``embedding_dim``;
    * an int or float item attribute -> its embedding.

    Paper sizes: 64 + 64 + 128 = 256. Frozen vectors stay buffers of :class:`ItemTable` (no
    gradient, never changed by the optimizer); with ``finetune: true`` they are copied into an
    ``nn.Parameter`` of this module instead. Padding ids (0) encode to all zeros.

    Args:
        feature_map: FeatureMap from ``build_feature_map``.
        item_table: :class:`ItemTable` with one row per item id (row 0 = padding).
        embedding_dim: width of id embeddings (a feature's own ``embedding_dim`` wins).
        use_multimodal: ``False`` drops the vector features (ablation).
        gather_mode: ``table`` encodes the whole table then gathers rows, ``rows`` gathers the
            raw features then encodes each row, ``auto`` picks ``table`` when the table has no
            more rows than the ids asked for (the cheaper of the two; projection and tag pooling
            cost is proportional to the rows encoded).

    In evaluation (eval mode, no gradients, not compiling) ``table`` and ``auto`` encode the
    whole table once and keep it for the following batches (:meth:`evaluation_table`): one
    evaluation pass encodes each item once instead of once per batch. The kept table is dropped
    when the module goes back to training, and re-encoded when a weight changed (its version
    counter moved: optimizer steps, ``load_state_dict``) or moved to another device.

    ``forward(item_ids (...) int64) -> (..., output_dim) float32``.

    Example::

        encoder = ItemEncoder(feature_map, ItemTable.from_item_info(path, feature_map), 64)
        target_emb, history_emb = encoder.encode_target_and_history(item_id, item_seq)
        # (B, 256), (B, L, 256)
    """

    def __init__(self, feature_map, item_table: ItemTable, embedding_dim: int,
                 use_multimodal: bool = True, embedding_initializer: str = DEFAULT_INITIALIZER,
                 gather_mode: str = "auto"):
        super().__init__()
        if gather_mode not in GATHER_MODES:
            raise ValueError(f"gather_mode must be one of {GATHER_MODES}, got {gather_mode!r}")
        self.item_table = item_table
        self.gather_mode = gather_mode
        self.features = item_features(feature_map, use_multimodal)
        self.specs = {name: feature_map.features[name] for name in self.features}
        self.id_features = [n for n in self.features if self.specs[n]["type"] in ID_TYPES]
        self.vector_features = [n for n in self.features if self.specs[n]["type"] in VECTOR_TYPES]
        missing = [n for n in self.features if n != ITEM_ID and n not in item_table.names]
        if missing:
            raise UserError(f"item table has no column {missing[0]} (declared source: item)")
        self.id_embeddings = id_embedding_dict(feature_map, self.id_features, embedding_dim,
                                               embedding_initializer)
        self.projections = nn.ModuleDict()
        self.finetuned_vectors = nn.ParameterDict()
        dims = {name: feature_dim(feature_map, name, embedding_dim) for name in self.id_features}
        for name in self.vector_features:
            spec = self.specs[name]
            pretrain_dim = int(spec["pretrain_dim"])
            table_dim = item_table.column(name).shape[-1]
            if table_dim != pretrain_dim:
                raise UserError(f"item table column {name}: vectors have {table_dim} values but "
                                f"the feature map says pretrain_dim={pretrain_dim}")
            out_dim = pretrain_dim if spec["projection"] == "none" else feature_dim(
                feature_map, name, embedding_dim)
            self.projections[name] = vector_projection(
                spec["projection"], pretrain_dim, out_dim,
                bias=bool(spec.get("projection_bias", True)))
            if spec.get("finetune", False):
                self.finetuned_vectors[name] = nn.Parameter(
                    item_table.column(name).detach().clone().float())
            dims[name] = out_dim
        self.feature_dims = [dims[name] for name in self.features]
        self.output_dim = sum(self.feature_dims)
        self._evaluation_table = None   # (weights' identity, encoded table) while evaluating

    @property
    def num_items(self) -> int:
        """Rows of the item table (real items + the padding row)."""
        return self.item_table.num_rows

    def uses_table_first(self, num_ids: int) -> bool:
        """Whether encoding ``num_ids`` ids goes through the whole table (see ``gather_mode``).

        Under ``torch.compile``, ``auto`` encodes rows: a choice by the number of ids would be
        a guard on the batch's sizes, and a new graph each time the batch crosses it."""
        if self.gather_mode == "auto":
            return not torch.compiler.is_compiling() and self.item_table.num_rows <= num_ids
        return self.gather_mode == "table"

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``item_ids (...) int64 -> (..., output_dim)``; padding ids give zero rows."""
        flat_ids = item_ids.reshape(-1)
        encoded_table = self.evaluation_table()
        if encoded_table is None and self.uses_table_first(flat_ids.numel()):
            encoded_table = self.encode_rows(None)
        if encoded_table is not None:
            item_emb = encoded_table.index_select(0, flat_ids)
        else:
            item_emb = self.encode_rows(flat_ids)
            item_emb = item_emb * (flat_ids != PADDING_ID).unsqueeze(-1).to(item_emb.dtype)
        return item_emb.view(*item_ids.shape, self.output_dim)

    def evaluation_table(self) -> torch.Tensor | None:
        """The encoded table ``(num_items, output_dim)`` kept across evaluation batches, or
        ``None`` outside evaluation (training, gradients on, ``torch.compile`` tracing) and
        with ``gather_mode="rows"``."""
        if (self.training or torch.is_grad_enabled() or self.gather_mode == "rows"
                or torch.compiler.is_compiling()):
            return None
        identity = self._weights_identity()
        if self._evaluation_table is None or self._evaluation_table[0] != identity:
            self._evaluation_table = (identity, self.encode_rows(None))
        return self._evaluation_table[1]

    def _weights_identity(self) -> tuple:
        """What the encoded table depends on: every weight's storage and version, and the
        autocast state."""
        tensors = [*self.parameters(), *self.item_table.buffers()]
        autocast = tuple(torch.is_autocast_enabled(kind) for kind in ("cpu", "cuda"))
        return autocast + tuple((t.device, t.data_ptr(), t._version) for t in tensors)

    def train(self, mode: bool = True):
        self._evaluation_table = None
        return super().train(mode)

    def encode_target_and_history(self, target_ids: torch.Tensor, history_ids: torch.Tensor):
        """One encoding pass for both: ``(B,)``, ``(B, L)`` -> ``(B, D)``, ``(B, L, D)``."""
        item_ids = torch.cat([history_ids, target_ids.unsqueeze(1)], dim=1)
        item_emb = self(item_ids)
        return item_emb[:, -1], item_emb[:, :-1]

    def encode_rows(self, row_ids: torch.Tensor | None) -> torch.Tensor:
        """Encode item rows ``(M,) int64`` -> ``(M, output_dim)``; ``None`` encodes every row.

        With ``None`` the padding row 0 is zeroed here; with ids the caller masks padding.
        """
        table = self.item_table
        if row_ids is None:
            row_ids = torch.arange(table.num_rows, device=self._device())
            columns = {name: table.column(name) for name in self.features if name in table.names}
            padding_mask = row_ids != PADDING_ID
        else:
            columns = table(row_ids, names=[n for n in self.features if n in table.names])
            padding_mask = None
        id_inputs = {name: (row_ids if name == ITEM_ID else columns[name])
                     for name in self.id_features}
        id_emb = self.id_embeddings(id_inputs) if self.id_embeddings is not None else {}
        parts = []
        for name in self.features:
            kind = self.specs[name]["type"]
            if kind == "sequence":
                parts.append(masked_mean(id_emb[name], columns[name] != PADDING_ID))
            elif kind in VECTOR_TYPES:
                vectors = (self.finetuned_vectors[name][row_ids] if name in self.finetuned_vectors
                           else columns[name])
                parts.append(self.projections[name](vectors.float()))
            else:
                parts.append(id_emb[name])
        encoded = torch.cat(parts, dim=-1)
        if padding_mask is not None:
            encoded = encoded * padding_mask.unsqueeze(-1).to(encoded.dtype)
        return encoded

    def _device(self) -> torch.device:
        for tensor in self.item_table.buffers():
            return tensor.device
        return next(self.parameters()).device
