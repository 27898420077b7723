"""Transformer_DCN: the 1st-place model of the WWW 2025 EReL@MIR multimodal CTR challenge.

Paper: arXiv 2505.03543. Architecture and the padding-mask defect of the published code:
DESIGN.md §4 and docs/model.md.
"""
from __future__ import annotations

import torch

from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ
from fuxictr_mmctr.layers.cross_deep import CrossDeepArch
from fuxictr_mmctr.layers.embedding import DEFAULT_INITIALIZER, SideFeatureEmbedding
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.sequence import history_mask, masked_mean, truncate_history
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer
from fuxictr_mmctr.models.base import MultimodalRankModel, resolve_item_table
from fuxictr_mmctr.models.registry import register_model


@register_model
class Transformer_DCN(MultimodalRankModel):
    """ItemEncoder -> TargetAwareTransformer -> CrossDeepArch -> PredictionHead.

    With ``D`` the item width (64 + 64 + 128 = 256 at paper sizes), ``T = 2D`` the token width
    and ``S`` the side-feature width (likes, views: 2 x 64)::

        target_emb, history_emb = ItemEncoder(item_id), ItemEncoder(item_seq)   (B, D), (B, L, D)
        sequence_out = TargetAwareTransformer(target_emb, history_emb)         (B, (k + 1) T)
        dcn_input    = [side_emb || target_emb || sequence_out]                (B, F)
        y_pred       = sigmoid(PredictionHead(CrossDeepArch(dcn_input)))       (B, 1)

    ``F = S + D + (k + 1) T`` = 128 + 256 + 17 * 512 = 9,088 at paper sizes.

    Args (hyperparameters; defaults are the paper's):
        feature_map: FeatureMap with item features (``source: item``) and side features.
        item_table / item_info: the item side table, or the path of item_info.parquet to read it.
        embedding_dim: width of id embeddings (item id, tags, likes, views).
        max_len: history positions used (the most recent ones); ``None`` uses the batch's.
        transformer_layers, num_heads, dim_feedforward, transformer_dropout: the encoder.
        first_k_cols: ``k``, most recent encoder outputs flattened into the DCN input.
        concat_max_pool: add the Linear of the masked max-pool over all encoder outputs.
        dcn_cross_layers, dcn_hidden_units: the cross network and the parallel MLP.
        mlp_hidden_units: hidden layers of the prediction head.
        hidden_activations, net_dropout, batch_norm: of the parallel MLP.
        use_transformer: ``False`` replaces the transformer by a masked mean of the history.
        use_dcn: ``False`` drops the cross network (the parallel MLP alone).
        use_multimodal: ``False`` drops the frozen multimodal vector from item representations.
        target_concat: ``False`` feeds history tokens without the target.
        legacy_mask: reproduce the published code's inverted padding mask (docs/model.md).

    ``forward(batch) -> {"y_pred": (B, 1)}`` with the task's output activation applied; batch
    holds ``item_id (B,)``, ``item_seq (B, L)`` (left-padded with 0) and the side features.
    """

    def __init__(self, feature_map, model_id="Transformer_DCN", gpu=-1, item_table=None,
                 item_info=None, embedding_dim=64, max_len=None, transformer_layers=2,
                 num_heads=1, dim_feedforward=256, transformer_dropout=0.2, first_k_cols=16,
                 concat_max_pool=True, dcn_cross_layers=3, dcn_hidden_units=(1024, 512, 256),
                 mlp_hidden_units=(64, 32), hidden_activations="ReLU", net_dropout=0.2,
                 batch_norm=False, use_transformer=True, use_dcn=True, use_multimodal=True,
                 target_concat=True, legacy_mask=False, learning_rate=5e-4,
                 embedding_initializer=DEFAULT_INITIALIZER, embedding_regularizer=None,
                 net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu,
                         embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.max_len = None if max_len is None else int(max_len)
        self.item_encoder = ItemEncoder(feature_map,
                                        resolve_item_table(feature_map, item_table, item_info),
                                        embedding_dim, use_multimodal=use_multimodal,
                                        embedding_initializer=embedding_initializer)
        self.side_embedding = SideFeatureEmbedding(feature_map, embedding_dim,
                                                   embedding_initializer=embedding_initializer)
        item_dim = self.item_encoder.output_dim
        if use_transformer:
            self.sequence_arch = TargetAwareTransformer(
                item_dim, num_layers=transformer_layers, num_heads=num_heads,
                dim_feedforward=dim_feedforward, dropout=transformer_dropout,
                first_k_cols=first_k_cols, concat_max_pool=concat_max_pool,
                target_concat=target_concat, legacy_mask=legacy_mask)
            sequence_dim = self.sequence_arch.output_dim
        else:
            self.sequence_arch = None  # masked mean of the history items
            sequence_dim = item_dim
        self.dcn_input_dim = self.side_embedding.output_dim + item_dim + sequence_dim
        self.cross_deep = CrossDeepArch(self.dcn_input_dim, cross_layers=dcn_cross_layers,
                                        hidden_units=dcn_hidden_units,
                                        hidden_activations=hidden_activations,
                                        dropout=net_dropout, batch_norm=batch_norm,
                                        use_cross=use_dcn)
        self.head = PredictionHead(self.cross_deep.output_dim, hidden_units=mlp_hidden_units,
                                   hidden_activations=hidden_activations)
        self.compile(kwargs.get("optimizer", "adam"), kwargs.get("loss", "binary_crossentropy"),
                     learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict) -> dict:
        """``{item_id (B,), item_seq (B, L), side features (B,)} -> {"y_pred": (B, 1)}``."""
        item_seq = truncate_history(inputs[ITEM_SEQ], self.max_len)
        target_emb, history_emb = self.item_encoder.encode_target_and_history(
            inputs[ITEM_ID], item_seq)
        sequence_out = self.sequence_features(target_emb, history_emb, history_mask(item_seq))
        dcn_input = torch.cat([self.side_embedding(inputs), target_emb, sequence_out], dim=-1)
        logit = self.head(self.cross_deep(dcn_input))
        return {"y_pred": self.output_activation(logit)}

    def sequence_features(self, target_emb: torch.Tensor, history_emb: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
        """``(B, D)``, ``(B, L, D)``, ``(B, L) bool`` -> ``(B, sequence_dim)``."""
        if self.sequence_arch is None:
            return masked_mean(history_emb, mask)
        return self.sequence_arch(target_emb, history_emb, mask)
