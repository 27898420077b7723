"""Transformer_DCN: the 1st-place model of the WWW 2025 EReL@MIR multimodal CTR challenge.

Paper: arXiv 2505.03543. Architecture, and the padding-mask defect of the published code that
``legacy_mask`` reproduces: docs/model.md.
"""
from __future__ import annotations

import torch

from fuxictr_mmctr.layers.cross_deep import CrossDeepArch
from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.sequence import masked_mean
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model


@register_model
class Transformer_DCN(MultimodalRankModel):
    """InputArch -> TargetAwareTransformer -> CrossDeepArch -> PredictionHead.

    With ``D`` the item width (64 + 64 + 128 = 256 at paper sizes), ``T = 2D`` the token width
    and ``S`` the side-feature width (likes, views: 2 x 64)::

        target_emb, history_emb, history_mask, side_emb = InputArch(batch)
        sequence_out = TargetAwareTransformer(target_emb, history_emb)         (B, (k + 1) T)
        dcn_input    = [side_emb || target_emb || sequence_out]                (B, F)
        logit        = PredictionHead(CrossDeepArch(dcn_input))                (B, 1)

    ``F = S + D + (k + 1) T`` = 128 + 256 + 17 * 512 = 9,088 at paper sizes.

    Hyperparameters (the arguments of :meth:`build`; defaults are the paper's, and the shared
    ones, ``embedding_dim=64``, ``max_len``, ``use_multimodal``, are the base class's):
        transformer_layers, num_heads, dim_feedforward, transformer_dropout: the encoder.
        first_k_cols: ``k``, most recent encoder outputs flattened into the DCN input.
        concat_max_pool: add the Linear of the masked max-pool over all encoder outputs.
        dcn_cross_layers, dcn_hidden_units: the cross network and the parallel MLP.
        mlp_hidden_units: hidden layers of the prediction head.
        hidden_activations, net_dropout, batch_norm: of the parallel MLP.
        use_transformer: ``False`` replaces the transformer by a masked mean of the history.
        use_dcn: ``False`` drops the cross network (the parallel MLP alone).
        target_concat: ``False`` feeds history tokens without the target.
        legacy_mask: reproduce the published code's inverted padding mask (docs/model.md).
        dcn_low_rank, dcn_num_experts: ``None`` (the paper) keeps full-rank cross layers; a rank
            ``r`` uses DCN-V2's gated mixture of ``dcn_num_experts`` low-rank experts instead
            (:class:`~fuxictr_mmctr.layers.cross_deep.LowRankMixtureCrossNet`: 7.06M cross
            parameters instead of 247.8M at paper sizes with ``r = 32``, 4 experts).
    """

    def build(self, transformer_layers=2, num_heads=1, dim_feedforward=256,
              transformer_dropout=0.2, first_k_cols=16, concat_max_pool=True,
              dcn_cross_layers=3, dcn_hidden_units=(1024, 512, 256), mlp_hidden_units=(64, 32),
              hidden_activations="ReLU", net_dropout=0.2, batch_norm=False,
              use_transformer=True, use_dcn=True, target_concat=True, legacy_mask=False,
              dcn_low_rank=None, dcn_num_experts=4):
        item_dim = self.inputs.item_dim
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
        self.dcn_input_dim = self.inputs.side_dim + item_dim + sequence_dim
        self.cross_deep = CrossDeepArch(self.dcn_input_dim, cross_layers=dcn_cross_layers,
                                        hidden_units=dcn_hidden_units,
                                        hidden_activations=hidden_activations,
                                        dropout=net_dropout, batch_norm=batch_norm,
                                        use_cross=use_dcn, cross_low_rank=dcn_low_rank,
                                        cross_num_experts=dcn_num_experts)
        self.head = PredictionHead(self.cross_deep.output_dim, hidden_units=mlp_hidden_units,
                                   hidden_activations=hidden_activations)

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit."""
        if self.sequence_arch is None:
            sequence_out = masked_mean(inputs.history_emb, inputs.history_mask)
        else:
            sequence_out = self.sequence_arch(inputs.target_emb, inputs.history,
                                              inputs.history_mask)
        dcn_input = torch.cat([inputs.side_emb, inputs.target_emb, sequence_out], dim=-1)
        return self.head(self.cross_deep(dcn_input))
