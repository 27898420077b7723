"""FactorizationMachine: first-order and pairwise inner-product terms over equal-width fields."""
from __future__ import annotations

import math

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    r"""Factorization machine logit over ``F`` fields of width ``d`` (Rendle, 2010).

    With ``e_f`` the embedding of field ``f`` (``fields[:, f]``)::

        first  = w_0 + sum_f <w_f, e_f>                                             (B, 1)
        second = sum_{i<j} <e_i, e_j>
               = 0.5 * sum_k ((sum_f e_fk)^2 - sum_f e_fk^2)                          (B, 1)
        logit  = first + second

    The second form of the pairwise term costs ``O(F d)`` instead of ``O(F^2 d)``.

    First order: FuxiCTR's FM gives every feature value a scalar weight (a 1-d embedding) plus a
    global bias ``w_0``. Here the fields arrive as embeddings, and one of them (the frozen item
    vector, projected to ``d``) has no vocabulary to index, so each field ``f`` gets its own
    bias-free ``Linear(d -> 1)``, ``w_f``: for an id field, ``<w_f, e_f(v)>`` is the scalar
    weight of value ``v`` (tied to its embedding); for a vector field it is linear in the
    vector. Parameters: ``F * d + 1``.

    Args:
        num_fields: ``F``.
        field_dim: ``d``.

    ``forward(fields (B, F, d)) -> (B, 1)``; :meth:`second_order` alone is a static method.

    Example::

        fm = FactorizationMachine(num_fields=5, field_dim=64)
        logit = fm(torch.cat([inputs.side_fields, inputs.target_fields], dim=1))    # (B, 1)
    """

    def __init__(self, num_fields: int, field_dim: int):
        super().__init__()
        self.num_fields = int(num_fields)
        self.field_dim = int(field_dim)
        self.weight = nn.Parameter(torch.empty(self.num_fields, self.field_dim))
        self.bias = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each ``w_f`` as a Xavier-normal ``Linear(d -> 1)``; ``w_0 = 0``."""
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (self.field_dim + 1)))
        nn.init.zeros_(self.bias)

    @staticmethod
    def second_order(fields: torch.Tensor) -> torch.Tensor:
        """``sum_{i<j} <e_i, e_j>``: ``(B, F, d) -> (B, 1)``."""
        square_of_sum = fields.sum(dim=1).square()
        sum_of_squares = fields.square().sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=-1, keepdim=True)

    def first_order(self, fields: torch.Tensor) -> torch.Tensor:
        """``w_0 + sum_f <w_f, e_f>``: ``(B, F, d) -> (B, 1)``."""
        return torch.einsum("bfd,fd->b", fields, self.weight).unsqueeze(-1) + self.bias

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """``(B, F, d) -> (B, 1)`` logit."""
        return self.first_order(fields) + self.second_order(fields)
