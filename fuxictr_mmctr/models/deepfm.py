"""DeepFM (Guo et al., IJCAI 2017, arXiv 1703.04247): the history-free baseline.

How far a model that ignores the history gets: it reads the side features and the target item
only, as FuxiCTR's model_zoo DeepFM reads its feature fields.
"""
from __future__ import annotations

import torch

from fuxictr_mmctr.layers.fm import FactorizationMachine
from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model


@register_model
class DeepFM(MultimodalRankModel):
    """FM (first order + pairwise inner products) + an MLP over the same fields.

    Fields, each ``d = embedding_dim`` wide (the field-wise view of the input stage): the side
    features (likes_level, views_level) and the target item's features (item id, mean of its tag
    embeddings, the frozen vector through a bias-free ``Linear(128, d)``)::

        fields = [side_fields || target_fields]                                (B, F, d)
        logit  = FactorizationMachine(fields) + MLP(flatten(fields))           (B, 1)

    ``F = 5`` and ``d = 64`` at the challenge's sizes. The history is never read: the output
    does not depend on it at all, and the input stage encodes no history item
    (``reads_history = False``: only the targets' item features are gathered).

    Hyperparameters (the arguments of :meth:`build`; defaults are FuxiCTR's DeepFM_default):
        hidden_units, hidden_activations, net_dropout, batch_norm: the MLP (its last layer is
        ``Linear(hidden_units[-1], 1)``).
    """

    field_wise = True
    #: The history is never read: the input stage encodes the targets only.
    reads_history = False

    def build(self, hidden_units=(300, 300, 300), hidden_activations="ReLU", net_dropout=0.0,
              batch_norm=False):
        self.num_fields = self.inputs.num_side_fields + self.inputs.num_item_fields
        field_dim = self.inputs.field_dim
        self.fm = FactorizationMachine(self.num_fields, field_dim)
        self.dnn = PredictionHead(self.num_fields * field_dim, hidden_units=hidden_units,
                                  hidden_activations=hidden_activations, dropout=net_dropout,
                                  batch_norm=batch_norm)

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit (side and target fields only)."""
        fields = torch.cat([inputs.side_fields, inputs.target_fields], dim=1)
        return self.fm(fields) + self.dnn(fields.flatten(start_dim=1))
