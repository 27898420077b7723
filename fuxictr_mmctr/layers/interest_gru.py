"""DIEN's interest extractor (GRU) and interest evolution (AUGRU) over left-padded histories.

Histories are left-padded (padding first, the most recent item last). A GRU run naively over
such a row reads the padding before the items; packing (``pack_padded_sequence``) assumes the
padding comes after them. Here every recurrence takes the mask and carries its state unchanged
through padding steps::

    h_t = m_t * cell(x_t, h_{t-1}) + (1 - m_t) * h_{t-1}          (m_t = 1 at real items)

so a row gives the same result wherever its padding sits (left, right, or in between), and the
same result as the cell run over its real items alone. A row without real items keeps ``h_0``.
The recurrences are Python loops over the ``L`` positions (exact for any mask, and
``torch.export``-able); the input projections of all positions are one matrix product.

Gate layout (both cells, as ``torch.nn.GRU``: rows ``[r; z; n]`` of ``weight_ih (3H, I)``,
``weight_hh (3H, H)``, ``bias_ih``, ``bias_hh``), with ``u = 1 - z`` the update gate::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),        u = 1 - z
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))                       (candidate h~)
    GRU:    h' = (1 - u) * h + u * n                                    (= torch.nn.GRU)
    AUGRU:  u' = a_t * u,   h' = (1 - u') * h + u' * n                  (DIEN, Zhou et al. 2019)

Parameters are initialised as ``torch.nn.GRU`` does: uniform in ``(-1/sqrt(H), 1/sqrt(H))``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fuxictr_mmctr.layers.target_attention import masked_softmax


class _MaskedRecurrence(nn.Module):
    """The parameters and the masked loop shared by :class:`MaskedGRU` and :class:`AUGRU`."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim = int(input_dim)
        self.hidden_dim = int(hidden_dim)
        self.weight_ih = nn.Parameter(torch.empty(3 * self.hidden_dim, self.input_dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * self.hidden_dim, self.hidden_dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * self.hidden_dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * self.hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_dim)
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(weight, -bound, bound)

    def _run(self, inputs: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None,
             h0: torch.Tensor | None):
        """``(B, L, I), (B, L) bool, (B, L) or None, (B, H) or None -> (B, L, H), (B, H)``."""
        batch, length, _ = inputs.shape
        # One projection for every position; unbind (not indexing per step) keeps the backward
        # linear in L: each step's gradient lands in its own slice, stacked once.
        gates_x = F.linear(inputs, self.weight_ih, self.bias_ih).unbind(1)   # L x (B, 3H)
        real_steps = mask.unsqueeze(-1).unbind(1)                             # L x (B, 1)
        attention_steps = (attention.unsqueeze(-1).unbind(1) if attention is not None
                           else [None] * length)
        h = inputs.new_zeros(batch, self.hidden_dim) if h0 is None else h0
        states = []
        for x_t, real, a_t in zip(gates_x, real_steps, attention_steps):
            x_r, x_z, x_n = x_t.chunk(3, dim=-1)
            h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
            reset = torch.sigmoid(x_r + h_r)
            update = 1.0 - torch.sigmoid(x_z + h_z)
            candidate = torch.tanh(x_n + reset * h_n)
            if a_t is not None:
                update = a_t * update
            stepped = h + update * (candidate - h)
            h = torch.where(real, stepped, h)
            states.append(h)
        if not states:
            return inputs.new_zeros(batch, 0, self.hidden_dim), h
        return torch.stack(states, dim=1) * mask.unsqueeze(-1).to(h.dtype), h


class MaskedGRU(_MaskedRecurrence):
    """GRU over a masked (e.g. left-padded) sequence: DIEN's interest extractor.

    Padding steps carry the state (module docstring); equals ``torch.nn.GRU`` with the same
    weights run over each row's real items only.

    Args:
        input_dim: ``I``, the item width.
        hidden_dim: ``H``, the state width.

    ``forward(inputs (B, L, I), mask (B, L) bool, h0 (B, H) = zeros) -> (states (B, L, H),
    final (B, H))``: ``states`` are zeros at masked positions, ``final`` is the state after the
    last real item (``h0`` for a row without one).

    Example::

        extractor = MaskedGRU(256, 256)
        states, final = extractor(inputs.history_emb, inputs.history_mask)  # (B, L, 256), (B, 256)
    """

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, h0: torch.Tensor | None = None):
        return self._run(inputs, mask, None, h0)


class AUGRU(_MaskedRecurrence):
    """GRU with attentional update gate (DIEN's interest evolution layer).

    The update gate of step ``t`` is scaled by the attention weight ``a_t`` of that step
    (``u'_t = a_t u_t``, module docstring): a step with ``a_t = 0`` leaves the state as it was.
    Padding steps carry the state whatever ``a_t`` says.

    Args:
        input_dim: ``I``, the width of the inputs (the extractor's states).
        hidden_dim: ``H``, the state width.

    ``forward(inputs (B, L, I), attention (B, L), mask (B, L) bool, h0 (B, H) = zeros) ->
    (states (B, L, H), final (B, H))``: ``final`` is the state after the last real item, the
    user's interest towards the target.

    Example::

        evolution = AUGRU(256, 256)
        _, interest = evolution(states, attention_weights, inputs.history_mask)   # (B, 256)
    """

    def forward(self, inputs: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor,
                h0: torch.Tensor | None = None):
        return self._run(inputs, mask, attention.to(inputs.dtype), h0)


class BilinearAttention(nn.Module):
    """DIEN's attention between the target item and the extractor states.

    ::

        s_t = h_t^T W e_target          W: (H, D), initialised to the identity (as FuxiCTR)
        a   = masked softmax_t(s)       0 at padding; a row without real items gives zeros

    Args:
        key_dim: ``H``, the width of the states ``h_t``.
        query_dim: ``D``, the width of the target item.

    ``forward(target_emb (B, D), states (B, L, H), mask (B, L) bool) -> (B, L)`` weights.

    Example::

        attention = BilinearAttention(256, 256)
        weights = attention(inputs.target_emb, states, inputs.history_mask)      # (B, L)
    """

    def __init__(self, key_dim: int, query_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(int(key_dim), int(query_dim)))

    def scores(self, target_emb: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Raw scores ``s``: ``(B, D), (B, L, H) -> (B, L)``."""
        query = F.linear(target_emb, self.weight)                          # (B, H)
        return torch.bmm(states, query.unsqueeze(-1)).squeeze(-1)

    def forward(self, target_emb: torch.Tensor, states: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.scores(target_emb, states), mask)


__all__ = ["AUGRU", "BilinearAttention", "MaskedGRU"]
