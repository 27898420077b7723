"""Quadratic interaction network: QIN's stack of residual quadratic layers."""
from __future__ import annotations

import torch
from torch import nn

from fuxictr_mmctr.errors import UserError


class QuadraticLayer(nn.Module):
    r"""One quadratic term: the input times a sum of ``R`` full-width linear maps of itself.

    ::

        h_r = Dropout(W_r x + b_r)        W_r: (F, F), r = 1..R     (one Linear F -> R F)
        out = x * sum_r h_r               elementwise                  (B, F)

    Each output coordinate is a sum of products of two input coordinates (order-2 interactions
    of the input); ``R`` is QIN's ``num_row`` ("rank"). Parameters: ``R (F^2 + F)``.

    Args:
        input_dim: ``F``.
        rank: ``R``.
        dropout: on the ``R F`` linear outputs.

    ``forward(x (B, F)) -> (B, F)``.

    Example::

        layer = QuadraticLayer(1024, rank=4)
        term = layer(x)                  # (B, 1024)
    """

    def __init__(self, input_dim: int, rank: int = 4, dropout: float = 0.0):
        super().__init__()
        if int(input_dim) < 1 or int(rank) < 1:
            raise UserError(f"quadratic layer needs input_dim >= 1 and rank >= 1, got "
                            f"{input_dim} and {rank}")
        self.input_dim = int(input_dim)
        self.rank = int(rank)
        self.linear = nn.Linear(self.input_dim, self.rank * self.input_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F) -> (B, F)``."""
        maps = self.dropout(self.linear(x)).view(*x.shape[:-1], self.rank, self.input_dim)
        return x * maps.sum(dim=-2)


class QuadraticInteractionNetwork(nn.Module):
    r"""QIN's interaction network: ``num_layers`` residual quadratic layers.

    ::

        x_0     = input                                                          (B, F)
        q_l     = QuadraticLayer_l(x_l) = x_l * sum_r Dropout(W_{l,r} x_l + b_{l,r})
        x_{l+1} = x_l + Dropout(PReLU_l(BatchNorm_l(q_l)))                       (B, F)
        out     = x_L

    The order is the published one (salmon1802/QIN, ``QIN_variety_v9``): batch norm (when
    ``batch_norm``), then PReLU (one learned slope per layer), then dropout are applied to the
    quadratic term, and the residual ``x_l`` is added last, outside them. Dropout acts twice per
    layer: on the linear maps inside the quadratic term and on the activated term.

    Parameters per layer: ``R (F^2 + F)`` + ``2F`` (batch norm) + 1 (PReLU); at QIN's size
    (``F = 1024``, ``R = 4``, 4 layers) 16.80M.

    Args:
        input_dim: ``F``.
        num_layers: ``L``.
        rank: ``R`` linear maps per quadratic term (QIN's ``num_row``).
        dropout: rate of both dropouts (0: none).
        batch_norm: batch norm of each quadratic term.

    ``forward(x (B, F)) -> (B, F)``.

    Example::

        network = QuadraticInteractionNetwork(1024, num_layers=4, rank=4, dropout=0.1)
        logit = nn.Linear(1024, 1)(network(x0))       # (B, 1)
    """

    def __init__(self, input_dim: int, num_layers: int = 4, rank: int = 4,
                 dropout: float = 0.1, batch_norm: bool = True):
        super().__init__()
        if int(num_layers) < 1:
            raise UserError(f"quadratic network needs num_layers >= 1, got {num_layers}")
        if not 0 <= float(dropout) < 1:
            raise UserError(f"quadratic network dropout must be in [0, 1), got {dropout}")
        self.output_dim = int(input_dim)
        self.layers = nn.ModuleList(QuadraticLayer(input_dim, rank, dropout)
                                    for _ in range(int(num_layers)))
        self.norms = nn.ModuleList(nn.BatchNorm1d(input_dim) if batch_norm else nn.Identity()
                                   for _ in range(int(num_layers)))
        self.activations = nn.ModuleList(nn.PReLU() for _ in range(int(num_layers)))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F) -> (B, F)``."""
        for layer, norm, activation in zip(self.layers, self.norms, self.activations):
            x = x + self.dropout(activation(norm(layer(x))))
        return x
