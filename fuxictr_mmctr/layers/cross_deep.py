"""CrossDeepArch: a DCNv2 cross network in parallel with an MLP (Wang et al., 2021).

The cross network is full rank (FuxiCTR ``CrossNetV2``) or DCN-V2's mixture of low-rank experts
(:class:`LowRankMixtureCrossNet`, "DCN-Mix").
"""
from __future__ import annotations

import math

import torch
from fuxictr.pytorch.layers import CrossNetV2, MLP_Block
from torch import nn

from fuxictr_mmctr.errors import UserError


def _positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, else a one-line :class:`UserError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 \
            or int(value) != value:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class LowRankMixtureCrossNet(nn.Module):
    r"""DCN-V2's mixture of low-rank cross experts ("DCN-Mix", https://arxiv.org/abs/2008.13535).

    For each layer ``l = 0..num_layers-1`` and expert ``i = 1..E`` (``E = num_experts``), with
    ``U_{l,i}, V_{l,i}: (F, r)``, ``C_{l,i}: (r, r)`` and one bias ``b_l: (F)`` per layer::

        E_{l,i}(x_l) = x_0 * (U_{l,i} tanh(C_{l,i} tanh(V_{l,i}^T x_l)) + b_l)      (B, F)
        w(x_l)       = softmax_i(G x_l)                 G: (E, F), bias-free gate    (B, E)
        x_{l+1}      = sum_i w_i(x_l) E_{l,i}(x_l) + x_l

    The gate ``G`` (one bias-free ``Linear(F -> 1)`` per expert, stacked) is shared by the
    layers, as the paper's ``G_i`` carries no layer index. Since the gate weights sum to one, the
    sum is computed as ``x_0 * (sum_i w_i U_{l,i} c_{l,i} + b_l)``: one ``(B, F)`` tensor per
    layer, never the ``(B, E, F)`` expert outputs.

    Parameters: ``num_layers * (E * (2 F r + r^2) + F) + E * F``. For ``F = 9088``, ``r = 32``,
    ``E = 4`` and 3 layers: 7,055,488, against 247,802,496 for three full-rank layers
    ``W_l: (F, F)``.

    Initialisation: each ``U``, ``V``, ``C`` Xavier-normal (``std = sqrt(2 / (fan_in +
    fan_out))`` of its own matrix), biases zero, the gate as any ``nn.Linear`` of the model.

    Args:
        input_dim: ``F``.
        num_layers: cross layers.
        low_rank: ``r``.
        num_experts: ``E``.

    ``forward(features (B, F)) -> (B, F)``.

    Example::

        cross = LowRankMixtureCrossNet(9088, num_layers=3, low_rank=32, num_experts=4)
        out = cross(dcn_input)        # (B, 9088)
    """

    def __init__(self, input_dim: int, num_layers: int = 3, low_rank: int = 32,
                 num_experts: int = 4):
        super().__init__()
        self.input_dim = _positive_int(input_dim, "input_dim")
        self.num_layers = _positive_int(num_layers, "cross layers")
        self.low_rank = _positive_int(low_rank, "low_rank")
        self.num_experts = _positive_int(num_experts, "num_experts")
        shape = (self.num_layers, self.num_experts)
        self.U = nn.Parameter(torch.empty(*shape, self.input_dim, self.low_rank))
        self.V = nn.Parameter(torch.empty(*shape, self.input_dim, self.low_rank))
        self.C = nn.Parameter(torch.empty(*shape, self.low_rank, self.low_rank))
        self.bias = nn.Parameter(torch.empty(self.num_layers, self.input_dim))
        self.gate = nn.Linear(self.input_dim, self.num_experts, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal ``U``, ``V``, ``C`` (per expert matrix), zero biases."""
        r, f = self.low_rank, self.input_dim
        nn.init.normal_(self.U, std=math.sqrt(2.0 / (f + r)))
        nn.init.normal_(self.V, std=math.sqrt(2.0 / (f + r)))
        nn.init.normal_(self.C, std=math.sqrt(1.0 / r))
        nn.init.zeros_(self.bias)
        nn.init.xavier_normal_(self.gate.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F) -> (B, F)``."""
        x0 = x = features
        for layer in range(self.num_layers):
            weights = torch.softmax(self.gate(x), dim=-1)                       # (B, E)
            v = torch.tanh(torch.einsum("bf,efr->ber", x, self.V[layer]))       # (B, E, r)
            c = torch.tanh(torch.einsum("ber,esr->bes", v, self.C[layer]))      # (B, E, r)
            mixed = torch.einsum("bes,efs->bf", c * weights.unsqueeze(-1), self.U[layer])
            x = x0 * (mixed + self.bias[layer]) + x
        return x


class CrossDeepArch(nn.Module):
    r"""Parallel DCNv2: cross layers beside a deep MLP, outputs concatenated.

    Cross network, full rank (FuxiCTR ``CrossNetV2``, https://arxiv.org/abs/2008.13535)::

        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l        W_l: (F, F), l = 0..cross_layers-1

    or, with ``cross_low_rank = r``, the mixture of ``cross_num_experts`` low-rank experts
    (:class:`LowRankMixtureCrossNet`, ``W_l`` replaced by gated ``U tanh(C tanh(V^T .))``).

    Deep network: ``MLP_Block(F -> hidden_units)`` with ReLU, dropout and optional batch norm.
    Output ``[x_L || deep(x_0)]``. With ``use_cross=False`` (ablation) only the deep part is
    returned; with no ``hidden_units`` the deep part is the identity.

    Parameters: ``cross_layers * (F^2 + F)`` in the full-rank cross network; for the paper's
    ``F = 9088`` and 3 layers that is 247.8M, most of the model. The low-rank mixture has
    ``cross_layers * (E (2 F r + r^2) + F) + E F``: 7.06M for ``r = 32``, ``E = 4``.

    Args:
        input_dim: ``F``.
        cross_layers: number of cross layers.
        hidden_units: widths of the deep MLP.
        hidden_activations, dropout, batch_norm: of the deep MLP.
        use_cross: keep the cross network.
        cross_low_rank: ``None`` for full-rank layers, else the rank ``r`` of the experts.
        cross_num_experts: experts per layer of the low-rank mixture (unused at full rank).

    ``forward(features (B, F)) -> (B, output_dim)``,
    ``output_dim = F * use_cross + (hidden_units[-1] if hidden_units else F)``.

    Example::

        arch = CrossDeepArch(9088, cross_layers=3, hidden_units=[1024, 512, 256])
        out = arch(dcn_input)        # (B, 9088 + 256)
        mix = CrossDeepArch(9088, cross_layers=3, cross_low_rank=32, cross_num_experts=4)
    """

    def __init__(self, input_dim: int, cross_layers: int = 3, hidden_units=(1024, 512, 256),
                 hidden_activations="ReLU", dropout: float = 0.0, batch_norm: bool = False,
                 use_cross: bool = True, cross_low_rank: int | None = None,
                 cross_num_experts: int = 4):
        super().__init__()
        hidden_units = list(hidden_units or [])
        if not use_cross:
            self.cross_net = None
        elif cross_low_rank is None:
            self.cross_net = CrossNetV2(input_dim, cross_layers)
        else:
            self.cross_net = LowRankMixtureCrossNet(input_dim, cross_layers,
                                                    low_rank=cross_low_rank,
                                                    num_experts=cross_num_experts)
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
