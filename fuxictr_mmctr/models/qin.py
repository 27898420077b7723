"""QIN: the 2nd-place model of the WWW 2025 EReL@MIR multimodal CTR challenge.

Facts from the authors' code (salmon1802/QIN, ``QIN_variety_v9``): ReLU target attention over
the history, then a quadratic interaction network, trained with Adam at 2e-3, halving the
learning rate on plateau, batch 8192, embedding regularizer 2e-4 (valid AUC 0.9701).
"""
from __future__ import annotations

import torch

from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.quadratic import QuadraticInteractionNetwork
from fuxictr_mmctr.layers.relu_attention import ReLUTargetAttention
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model


@register_model
class QIN(MultimodalRankModel):
    """InputArch -> ReLUTargetAttention -> QuadraticInteractionNetwork -> Linear(., 1).

    With ``D`` the item width (128 + 128 + 128 = 384 at QIN's sizes: id, mean of tags, the raw
    128-d frozen vector) and ``S`` the side width (likes, views: 2 x 128)::

        interest = W_o sum_i ReLU(s_i m_i) W_v h_i + t       ReLUTargetAttention   (B, D)
        x0       = [side || t || interest]                                          (B, F)
        logit    = Linear(QuadraticInteractionNetwork(x0))                          (B, 1)

    ``F = S + 2D = 1024`` at QIN's sizes. The attention weights are unnormalised ReLUs of the
    scaled dot products (no softmax); see
    :class:`~fuxictr_mmctr.layers.relu_attention.ReLUTargetAttention` and
    :class:`~fuxictr_mmctr.layers.quadratic.QuadraticInteractionNetwork` for the maths.

    Hyperparameters (the arguments of :meth:`build`; defaults are the published run's):
        attention_dim: width of the attention's queries/keys/values (``None``: ``2D``).
        attention_output_bias: bias of the attention's output map (the 0.9701 run had none).
        num_layers, num_row: quadratic layers and linear maps per layer ("rank").
        net_dropout, batch_norm: of the quadratic network.
    """

    def build(self, attention_dim=None, attention_output_bias=False, num_layers=4, num_row=4,
              net_dropout=0.1, batch_norm=True):
        item_dim = self.inputs.item_dim
        self.attention = ReLUTargetAttention(item_dim, attention_dim=attention_dim,
                                             output_bias=attention_output_bias)
        self.interaction_input_dim = self.inputs.side_dim + 2 * item_dim
        self.interaction = QuadraticInteractionNetwork(
            self.interaction_input_dim, num_layers=num_layers, rank=num_row,
            dropout=net_dropout, batch_norm=batch_norm)
        self.head = PredictionHead(self.interaction.output_dim, hidden_units=())

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit."""
        interest = self.attention(inputs.target_emb, inputs.history, inputs.history_mask)
        x0 = torch.cat([inputs.side_emb, inputs.target_emb, interest], dim=-1)
        return self.head(self.interaction(x0))
