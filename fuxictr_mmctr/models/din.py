"""DIN (Zhou et al., KDD 2018): the baseline of the WWW 2025 EReL@MIR multimodal CTR challenge.

Configured as the challenge's public baseline runs it (``config/model_config/DIN.yaml``): item
vector = id embedding || mean tag embedding || bias-free Linear of the frozen 128-d vector,
DIN attention without softmax, a batch-normalised DNN.
"""
from __future__ import annotations

import torch

from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.target_attention import TargetAttentionPooling
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model


@register_model
class DIN(MultimodalRankModel):
    """InputArch -> TargetAttentionPooling -> PredictionHead.

    With ``D`` the item width (64 + 64 + 128 = 256 in the challenge's configuration) and ``S``
    the side-feature width (likes, views: 2 x 64)::

        target_emb, history_emb, history_mask, side_emb = InputArch(batch)
        w_i    = MLP_att([t || h_i || t - h_i || t * h_i]) * m_i         (none: unnormalised)
        pooled = sum_i w_i h_i                                           (B, D)
        logit  = DNN([side_emb || target_emb || pooled])                 (B, S + 2D) -> (B, 1)

    The DNN is ``PredictionHead``: hidden layers Linear -> BatchNorm -> activation -> dropout,
    then one output unit; its input is 128 + 256 + 256 = 640 wide at challenge sizes.

    Hyperparameters (the arguments of :meth:`build`; defaults are the challenge baseline's):
        attention_hidden_units, attention_hidden_activations, attention_dropout: the scoring MLP.
        attention_normalization: ``none`` (DIN's scores times the mask) or ``softmax``.
        dnn_hidden_units, dnn_activations, net_dropout, batch_norm: the DNN.
    """

    def build(self, attention_hidden_units=(512, 256), attention_hidden_activations="ReLU",
              attention_dropout=0.1, attention_normalization="none",
              dnn_hidden_units=(1024, 512, 256), dnn_activations="ReLU", net_dropout=0.1,
              batch_norm=True):
        item_dim = self.inputs.item_dim
        self.attention = TargetAttentionPooling(item_dim, hidden_units=attention_hidden_units,
                                                activation=attention_hidden_activations,
                                                dropout=attention_dropout,
                                                normalization=attention_normalization)
        self.dnn_input_dim = self.inputs.side_dim + 2 * item_dim
        self.head = PredictionHead(self.dnn_input_dim, hidden_units=dnn_hidden_units,
                                   hidden_activations=dnn_activations, dropout=net_dropout,
                                   batch_norm=batch_norm)

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit."""
        pooled = self.attention(inputs.target_emb, inputs.history, inputs.history_mask)
        return self.head(torch.cat([inputs.side_emb, inputs.target_emb, pooled], dim=-1))
