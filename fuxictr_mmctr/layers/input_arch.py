"""InputArch: the one input stage every model shares (batch of ids -> embeddings).

Every model reads the same batches and the same item table through this module, so "gather
the item features of the target and of every history item" exists once. A model receives a
:class:`ModelInputs` and writes only its own arch on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.embedding import DEFAULT_INITIALIZER, SideFeatureEmbedding
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from fuxictr_mmctr.layers.sequence import history_mask, truncate_history


@dataclass
class ModelInputs:
    """What a model's ``score`` reads. ``B`` rows, ``L`` history positions, ``D`` item width.

    Attributes:
        target_emb: ``(B, D)`` the target item's representation.
        history_emb: ``(B, L, D)`` every history position (padding positions are zeros).
        history_mask: ``(B, L) bool``, ``True`` at real history items.
        side_emb: ``(B, S)`` side features (likes_level, views_level, ...) concatenated.
        item_seq: ``(B, L) int64`` the history ids (after ``max_len`` truncation).
        target_fields: ``(B, F_item, d)`` or ``None``: one equal-width embedding per item
            feature of the target (field-wise models only; see ``InputArch(field_dim=d)``).
        side_fields: ``(B, F_side, d)`` or ``None``: one embedding per side feature.
    """

    target_emb: torch.Tensor
    history_emb: torch.Tensor
    history_mask: torch.Tensor
    side_emb: torch.Tensor
    item_seq: torch.Tensor
    target_fields: torch.Tensor | None = None
    side_fields: torch.Tensor | None = None


class InputArch(nn.Module):
    """Turns a batch of ids into :class:`ModelInputs`.

    ::

        item_seq    = last max_len positions of batch["item_seq"]               (B, L)
        target_emb, history_emb = ItemEncoder(item_id), ItemEncoder(item_seq)   (B, D), (B, L, D)
        history_mask = item_seq != 0                                            (B, L) bool
        side_emb    = [emb(likes_level) || emb(views_level) || ...]             (B, S)

    With ``field_dim = d`` it also gives the field-wise view DeepFM-like models need: each item
    feature of the target (id, pooled tags, frozen vector, ...) and each side feature as one
    ``d``-wide field; a field of another width (the 128-d frozen vector, say) goes through its
    own ``Linear(width, d)``.

    Args:
        feature_map: FuxiCTR FeatureMap (``source: item`` features and side features).
        item_table: :class:`~fuxictr_mmctr.data.item_table.ItemTable` of the dataset.
        embedding_dim: width of id embeddings.
        max_len: history positions kept (the most recent); ``None`` keeps the batch's.
        use_multimodal: ``False`` leaves the frozen vectors out of item representations.
        embedding_initializer: FuxiCTR initializer string of the id embeddings.
        field_dim: ``d`` of the field-wise view, or ``None`` for none.

    ``forward(batch) -> ModelInputs``.

    Example::

        inputs = InputArch(feature_map, item_table, embedding_dim=64, max_len=100)(batch)
        inputs.target_emb.shape, inputs.history_emb.shape    # (B, 256), (B, 100, 256)
    """

    def __init__(self, feature_map, item_table: ItemTable, embedding_dim: int,
                 max_len: int | None = None, use_multimodal: bool = True,
                 embedding_initializer: str = DEFAULT_INITIALIZER, field_dim: int | None = None):
        super().__init__()
        if max_len is not None and int(max_len) < 1:
            raise UserError(f"max_len must be a positive integer or null, got {max_len}")
        self.max_len = None if max_len is None else int(max_len)
        self.item_encoder = ItemEncoder(feature_map, item_table, embedding_dim,
                                        use_multimodal=use_multimodal,
                                        embedding_initializer=embedding_initializer)
        self.side_embedding = SideFeatureEmbedding(feature_map, embedding_dim,
                                                   embedding_initializer=embedding_initializer)
        self.item_dim = self.item_encoder.output_dim
        self.side_dim = self.side_embedding.output_dim
        self.field_dim = field_dim
        self.field_projections = nn.ModuleDict()
        if field_dim is not None:
            widths = dict(zip(self.item_encoder.features, self.item_encoder.feature_dims))
            widths.update(zip(self.side_embedding.features, self.side_embedding.field_dims))
            for name, width in widths.items():
                if width != field_dim:
                    self.field_projections[name] = nn.Linear(width, field_dim, bias=False)
        self.num_item_fields = len(self.item_encoder.features)
        self.num_side_fields = self.side_embedding.num_fields

    def forward(self, batch: dict) -> ModelInputs:
        """``{item_id (B,), item_seq (B, L), side features (B,)} -> ModelInputs``."""
        item_seq = truncate_history(batch[ITEM_SEQ], self.max_len)
        target_emb, history_emb = self.item_encoder.encode_target_and_history(
            batch[ITEM_ID], item_seq)
        inputs = ModelInputs(target_emb=target_emb, history_emb=history_emb,
                             history_mask=history_mask(item_seq),
                             side_emb=self.side_embedding(batch), item_seq=item_seq)
        if self.field_dim is not None:
            inputs.target_fields = self._fields(
                target_emb.split(self.item_encoder.feature_dims, dim=-1),
                self.item_encoder.features, target_emb)
            side_dims = self.side_embedding.field_dims
            side_parts = inputs.side_emb.split(side_dims, dim=-1) if side_dims else []
            inputs.side_fields = self._fields(side_parts, self.side_embedding.features,
                                              inputs.side_emb)
        return inputs

    def _fields(self, parts, names, like: torch.Tensor) -> torch.Tensor:
        """Per-feature parts ``[(B, w_f)]`` -> ``(B, F, d)``, projecting widths other than d."""
        fields = [self.field_projections[name](part) if name in self.field_projections else part
                  for name, part in zip(names, parts)]
        if not fields:
            return like.new_zeros((like.shape[0], 0, self.field_dim))
        return torch.stack(fields, dim=1)
