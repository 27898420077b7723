"""CrossDeepArch: a DCNv2 cross network in parallel with an MLP (Wang et al., 2021)."""
from __future__ import annotations

import torch
from fuxictr.pytorch.layers import CrossNetV2, MLP_Block
from torch import nn


class CrossDeepArch(nn.Module):
    r"""Parallel DCNv2: full-rank cross layers beside a deep MLP, outputs concatenated.

    Cross network (FuxiCTR ``CrossNetV2``, https://arxiv.org/abs/2008.13535)::

        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l        W_l: (F, F), l = 0..cross_layers-1

    Deep network: ``MLP_Block(F -> hidden_units)`` with ReLU, dropout and optional batch norm.
    Output ``[x_L || deep(x_0)]``. With ``use_cross=False`` (ablation) only the deep part is
    returned; with no ``hidden_units`` the deep part is the identity.

    Parameters: ``cross_layers * (F^2 + F)`` in the cross network; for the paper's
    ``F = 9088`` and 3 layers that is 247.8M, most of the model.

    Args:
        input_dim: ``F``.
        cross_layers: number of cross layers.
        hidden_units: widths of the deep MLP.
        hidden_activations, dropout, batch_norm: of the deep MLP.
        use_cross: keep the cross network.

    ``forward(features (B, F)) -> (B, output_dim)``,
    ``output_dim = F * use_cross + (hidden_units[-1] if hidden_units else F)``.

    Example::

        arch = CrossDeepArch(9088, cross_layers=3, hidden_units=[1024, 512, 256])
        out = arch(dcn_input)        # (B, 9088 + 256)
    """

    def __init__(self, input_dim: int, cross_layers: int = 3, hidden_units=(1024, 512, 256),
                 hidden_activations="ReLU", dropout: float = 0.0, batch_norm: bool = False,
                 use_cross: bool = True):
        super().__init__()
        hidden_units = list(hidden_units or [])
        self.cross_net = CrossNetV2(input_dim, cross_layers) if use_cross else None
        self.deep_net = MLP_Block(input_dim=input_dim, hidden_units=hidden_units,
                                  hidden_activations=hidden_activations, output_dim=None,
                                  dropout_rates=dropout, batch_norm=batch_norm)
        deep_dim = hidden_units[-1] if hidden_units else input_dim
        self.output_dim = (input_dim if use_cross else 0) + deep_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F) -> (B, output_dim)``."""
        deep_out = self.deep_net(features)
        if self.cross_net is None:
            return deep_out
        return torch.cat([self.cross_net(features), deep_out], dim=-1)
