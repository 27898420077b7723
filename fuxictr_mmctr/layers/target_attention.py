"""Target attention pooling (DIN, Zhou et al., KDD 2018) and the masked softmax it may use.

A history item's weight depends on the target item: an MLP scores each pair ``(t, h_i)`` and
the history is pooled with those weights. DIN's weights are the raw scores (not normalised),
so the pooled vector keeps a notion of "how much" of the history matches the target.
"""
from __future__ import annotations

import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.packing import PackableHistory, dense_history, packed_history

NORMALIZATIONS = ("none", "softmax")


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the kept positions: ``scores (B, L)``, ``mask (B, L) bool -> (B, L)``.

    Weights are exactly 0 at positions the mask drops, sum to 1 over the kept ones, and a row
    with no kept position gives all zeros (never NaN, finite gradients).
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=-1) * mask.to(scores.dtype)
    return torch.where(mask.any(dim=-1, keepdim=True), weights, torch.zeros_like(weights))


class TargetAttentionPooling(PackableHistory, nn.Module):
    """DIN's activation unit: target-aware weighted sum of the history.

    For target ``t (D)`` and history items ``h_i (D)``, ``i = 1..L``, with ``m_i`` the mask::

        s_i    = MLP([t || h_i || t - h_i || t * h_i])                 (4D -> hidden -> 1)
        none:    w_i = s_i * m_i                                       (DIN: unnormalised)
        softmax: w_i = exp(s_i) m_i / sum_j exp(s_j) m_j               (0 for an empty row)
        pooled = sum_i w_i h_i                                         (D)

    The MLP is FuxiCTR's ``MLP_Block`` (Linear -> activation -> dropout per hidden layer, then
    ``Linear(., 1)``), run on the flattened ``(B * L, 4D)`` pairs, so batch-normalising
    activations such as ``Dice`` work too (their statistics then include padding positions,
    as in FuxiCTR's ``DIN_Attention``).

    Packing (``packed``, on by default): given the history as a
    :class:`~fuxictr_mmctr.data.history_plan.JaggedHistory` (the real positions the batch's
    plan lists), the scores are computed at real positions only and are 0 elsewhere, which the
    mask makes them anyway; with ``none`` the pooled vector is summed over the real positions
    too. The same weights up to float rounding, for a fraction of the MLP's cost (median 6 of
    100 positions on MicroLens), and no device sync. Exact unless the MLP normalises over the
    batch (``Dice``: its batch statistics include padding positions), so ``packable`` is false
    then.

    Args:
        item_dim: ``D``, the width of target and history items.
        hidden_units: hidden layers of the scoring MLP.
        activation: their activation (a torch name, or FuxiCTR's ``Dice``/``PReLU``).
        dropout: dropout after each hidden layer.
        normalization: ``none`` (DIN's scores times the mask) or ``softmax`` (masked softmax).

    ``forward(target_emb (B, D), history (B, L, D) or JaggedHistory, history_mask (B, L) bool)
    -> (B, D)``; :meth:`attention_weights` gives the ``(B, L)`` weights ``w``.

    Example::

        pooling = TargetAttentionPooling(256, hidden_units=(512, 256), dropout=0.1)
        pooled = pooling(inputs.target_emb, inputs.history_emb, inputs.history_mask)  # (B, 256)
        weights = pooling.attention_weights(inputs.target_emb, inputs.history_emb,
                                            inputs.history_mask)                      # (B, L)
    """

    def __init__(self, item_dim: int, hidden_units=(512, 256), activation="ReLU",
                 dropout: float = 0.1, normalization: str = "none"):
        super().__init__()
        normalization = str(normalization).lower()
        if normalization not in NORMALIZATIONS:
            raise UserError(f"attention normalization must be one of {NORMALIZATIONS}, "
                            f"got {normalization!r}")
        self.item_dim = int(item_dim)
        self.normalization = normalization
        self.scorer = MLP_Block(input_dim=4 * self.item_dim, hidden_units=list(hidden_units),
                                hidden_activations=activation, output_dim=1,
                                dropout_rates=dropout)
        activations = activation if isinstance(activation, (list, tuple)) else [activation]
        self.packable = not any(str(name).lower() == "dice" for name in activations)

    #: Why :attr:`packable` is false (a Dice activation).
    unpackable_reason = "Dice normalises over every position of the batch, padding included"

    def pair_features(self, target_emb: torch.Tensor, history_emb: torch.Tensor) -> torch.Tensor:
        """The scoring MLP's input ``[t || h || t - h || t * h]``: ``(..., D), (..., D) ->
        (..., 4D)``."""
        return torch.cat([target_emb, history_emb, target_emb - history_emb,
                          target_emb * history_emb], dim=-1)

    def scores(self, target_emb: torch.Tensor, history_emb: torch.Tensor) -> torch.Tensor:
        """Raw scores ``s``: ``(B, D), (B, L, D) -> (B, L)``, before masking."""
        batch, length, width = history_emb.shape
        target = target_emb.unsqueeze(1).expand(-1, length, -1)
        pairs = self.pair_features(target, history_emb)
        return self.scorer(pairs.reshape(batch * length, 4 * width)).view(batch, length)

    def real_scores(self, target_emb: torch.Tensor, jagged) -> torch.Tensor:
        """Scores at the plan's slots, 0 where no item is: ``(B, D)``, ``JaggedHistory`` ->
        ``(N',)``. The MLP runs on the ``N'`` slots only (``(N', 4D)``)."""
        target = jagged.plan.per_position(target_emb)                          # (N', D)
        pairs = self.pair_features(target, jagged.values)                       # (N', 4D)
        return self.scorer(pairs).squeeze(-1) * jagged.real.to(target.dtype)

    def attention_weights(self, target_emb: torch.Tensor, history,
                          history_mask: torch.Tensor) -> torch.Tensor:
        """The pooling weights ``w``: ``(B, D)``, history, ``(B, L) bool -> (B, L)``."""
        jagged = packed_history(self, history)
        if jagged is not None:
            scores = jagged.plan.to_padded_scores(self.real_scores(target_emb, jagged))
        else:
            scores = self.scores(target_emb, dense_history(history))
        if self.normalization == "softmax":
            return masked_softmax(scores, history_mask)
        return scores * history_mask.to(scores.dtype)

    def forward(self, target_emb: torch.Tensor, history,
                history_mask: torch.Tensor) -> torch.Tensor:
        """``(B, D)``, history ``(B, L, D)`` or jagged, ``(B, L) bool -> (B, D)``:
        ``sum_i w_i h_i``."""
        jagged = packed_history(self, history)
        if jagged is not None and self.normalization == "none":
            weights = self.real_scores(target_emb, jagged).unsqueeze(-1)        # (N', 1)
            return jagged.plan.sum_rows(weights * jagged.values)
        weights = self.attention_weights(target_emb, history, history_mask)
        return torch.bmm(weights.unsqueeze(1), dense_history(history)).squeeze(1)


__all__ = ["NORMALIZATIONS", "TargetAttentionPooling", "masked_softmax"]
