"""PredictionHead: the over-arch MLP that turns interaction features into one logit."""
from __future__ import annotations

import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn


class PredictionHead(nn.Module):
    """``logit = MLP(features)``: hidden layers with ``hidden_activations``, then ``Linear(., 1)``.

    The output activation (sigmoid for binary classification) is left to the model, which owns
    the task; the head returns raw logits. As in the published Transformer_DCN, the head has no
    dropout and no batch norm unless asked for.

    Args:
        input_dim: width of the features.
        hidden_units: widths of the hidden layers (``[]``: a single Linear).
        hidden_activations, dropout, batch_norm: of the hidden layers.

    ``forward(features (B, input_dim)) -> (B, 1)`` logits.

    Example::

        head = PredictionHead(9088 + 256, hidden_units=[64, 32])
        y_pred = torch.sigmoid(head(cross_deep_out))      # (B, 1)
    """

    def __init__(self, input_dim: int, hidden_units=(64, 32), hidden_activations="ReLU",
                 dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        self.mlp = MLP_Block(input_dim=input_dim, hidden_units=list(hidden_units or []),
                             hidden_activations=hidden_activations, output_dim=1,
                             dropout_rates=dropout, batch_norm=batch_norm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim) -> (B, 1)`` logits."""
        return self.mlp(features)
