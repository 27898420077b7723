"""InputArch: the one input stage every model shares (batch of ids -> embeddings).

Every model reads the same batches and the same item table through this module, so "gather
the item features of the target and of every history item" exists once. A model receives a
:class:`ModelInputs` and writes only its own arch on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fuxictr_mmctr.data.history_plan import (
    HistoryPlan,
    JaggedHistory,
    has_plan,
    plan_of_history,
)
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ, PADDING_ID
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.embedding import DEFAULT_INITIALIZER, SideFeatureEmbedding
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from fuxictr_mmctr.layers.sequence import history_mask, truncate_history


@dataclass
class ModelInputs:
    """What a model's ``score`` reads. ``B`` rows, ``L`` history positions, ``D`` item width.

    Attributes:
        target_emb: ``(B, D)`` the target item's representation.
        history: the encoded history: a
            :class:`~fuxictr_mmctr.data.history_plan.JaggedHistory` (the real positions only,
            with the batch's plan) when the batch has a plan, else ``(B, L, D)``; ``None`` for
            a model that reads no history (``reads_history = False``). Packed layers take it
            as it is; :attr:`history_emb` is its padded view.
        history_mask: ``(B, L) bool``, ``True`` at real history items.
        side_emb: ``(B, S)`` side features (likes_level, views_level, ...) concatenated.
        item_seq: ``(B, L) int64`` the history ids (after ``max_len`` truncation).
        target_fields: ``(B, F_item, d)`` or ``None``: one equal-width embedding per item
            feature of the target (field-wise models only; see ``InputArch(field_dim=d)``).
        side_fields: ``(B, F_side, d)`` or ``None``: one embedding per side feature.
    """

    target_emb: torch.Tensor
    history: JaggedHistory | torch.Tensor | None
    history_mask: torch.Tensor
    side_emb: torch.Tensor
    item_seq: torch.Tensor
    target_fields: torch.Tensor | None = None
    side_fields: torch.Tensor | None = None

    @property
    def history_emb(self) -> torch.Tensor:
        """``(B, L, D)`` every history position (padding positions are zeros), scattered from
        the real positions on first use."""
        if self.history is None:
            raise RuntimeError("this model's input stage encodes no history (its class says "
                               "reads_history = False)")
        if isinstance(self.history, JaggedHistory):
            return self.history.dense()
        return self.history


class InputArch(nn.Module):
    """Turns a batch of ids into :class:`ModelInputs`.

    ::

        item_seq    = last max_len positions of batch["item_seq"]               (B, L)
        target_emb, history = ItemEncoder(item_id), ItemEncoder(real ids of item_seq)
                                                                       (B, D), (N', D) jagged
        history_mask = item_seq != 0                                            (B, L) bool
        side_emb    = [emb(likes_level) || emb(views_level) || ...]             (B, S)

    Only real item ids are encoded: the target and the real history positions that the batch's
    history plan lists (:mod:`fuxictr_mmctr.data.history_plan`; the loader makes it on the
    host). The padded ``(B, L, D)`` layout is made from them only when a layer reads it
    (:attr:`ModelInputs.history_emb`). A batch without a plan (made by hand) gets one here,
    which reads its ids on the host (a device sync on a GPU); under ``torch.compile`` or
    ``torch.export`` such a batch is encoded padded instead (same values). With
    ``reads_history = False`` (set by a model that never reads the history, e.g. DeepFM) only
    the targets are encoded and ``history`` is ``None``.

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
        #: Whether the model reads the history (``False``: only the targets are encoded).
        self.reads_history = True

    def forward(self, batch: dict) -> ModelInputs:
        """``{item_id (B,), item_seq (B, L), side features (B,)}`` and the batch's history plan
        (optional) ``-> ModelInputs``."""
        item_seq = batch[ITEM_SEQ]
        plan = self.history_plan(batch, item_seq) if self.reads_history else None
        if self.max_len is not None and item_seq.shape[-1] > self.max_len:
            item_seq = truncate_history(item_seq, self.max_len)
            plan = plan.truncated(self.max_len) if plan is not None else None
        target_ids = batch[ITEM_ID]
        if not self.reads_history:
            target_emb, history = self.item_encoder(target_ids), None
        elif plan is None:
            target_emb, history = self.item_encoder.encode_target_and_history(target_ids,
                                                                              item_seq)
        else:
            history_ids = plan.real_ids(item_seq)                               # (N',)
            encoded = self.item_encoder(torch.cat([history_ids, target_ids]))   # (N' + B, D)
            slots = history_ids.shape[0]
            target_emb = encoded[slots:]
            history = JaggedHistory(encoded[:slots], history_ids != PADDING_ID, plan)
        inputs = ModelInputs(target_emb=target_emb, history=history,
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

    @staticmethod
    def history_plan(batch: dict, item_seq: torch.Tensor) -> HistoryPlan | None:
        """The batch's :class:`HistoryPlan` (made here when it has none), or ``None`` where
        the history is encoded padded: while ``torch.export`` traces, and under
        ``torch.compile`` for a batch without a plan. Under ``torch.compile`` the host-side
        bucket sizes are left unread (a graph would specialise on them)."""
        if torch.compiler.is_exporting():
            return None
        compiling = torch.compiler.is_compiling()
        if has_plan(batch):
            plan = HistoryPlan.of_batch(batch, item_seq.shape[-1], host_buckets=not compiling)
            if not compiling:
                plan.check(item_seq)
            return plan
        if compiling:
            return None
        return HistoryPlan.of_batch(plan_of_history(item_seq), item_seq.shape[-1])

    def _fields(self, parts, names, like: torch.Tensor) -> torch.Tensor:
        """Per-feature parts ``[(B, w_f)]`` -> ``(B, F, d)``, projecting widths other than d."""
        fields = [self.field_projections[name](part) if name in self.field_projections else part
                  for name, part in zip(names, parts)]
        if not fields:
            return like.new_zeros((like.shape[0], 0, self.field_dim))
        return torch.stack(fields, dim=1)
