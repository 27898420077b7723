"""TargetAwareTransformer: the sequence arch of Transformer_DCN (arXiv 2505.03543)."""
from __future__ import annotations

import torch
from torch import nn

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.packing import PackableHistory, dense_history, packed_history
from fuxictr_mmctr.layers.sequence import keep_one_key, last_k, masked_max


class TargetAwareTransformer(PackableHistory, nn.Module):
    r"""Transformer encoder over history items, each concatenated with the target item.

    With ``h_i`` the history item representations (``D`` wide), ``t`` the target's and
    ``m_i`` the history mask (``True`` = real item)::

        x_i = [h_i || t]                                   tokens   (B, L, T), T = 2D
        Z   = TransformerEncoder(x, ignore keys where not m)        (B, L, T)
        Z'  = Z with rows where not m set to 0
        out = [flatten(Z'_{L-k+1..L}) || W · max_{i: m_i} Z_i + b]  (B, (k + 1) T)

    ``target_concat=False`` uses ``x_i = h_i`` (``T = D``). ``concat_max_pool=False`` drops the
    max-pool term. With fewer than ``k`` positions the last-k block is left-padded with zeros.

    Masking (``legacy_mask=False``): padding keys are ignored by attention; outputs at padding
    positions are zeroed before the last-k gather and excluded from the max-pool, which is 0 for a
    row without real items. Such a row would have every key ignored (NaN softmax), so its last
    position stays attended: its outputs are then zeroed anyway, so the sequence output of an
    empty history is ``[0 .. 0 || b]``, finite, whatever the target.

    ``legacy_mask=True`` reproduces the published code: it passed ``item_seq > 0`` (True =
    *valid*) as ``src_key_padding_mask`` (True = *ignore*). Attention then sees only padding
    keys, the outputs kept for last-k and max-pool are those at padding positions, and real-item
    positions are zeroed. A row without padding would have every key ignored: as in the published
    code its last position is un-ignored, which keeps it finite (no NaN). Consequence: for any
    history shorter than ``L`` the output does not depend on the history items at all.

    Packing (``packed``, on by default with the correct mask): with the correct mask the
    outputs at real positions do not depend on padding, so padding need not be computed. Given
    the history as a :class:`~fuxictr_mmctr.data.history_plan.JaggedHistory` (what the input
    stage makes from the batch's plan), rows are taken in the plan's length buckets (widths
    ``8, 16, 32, ..., L``) and each group builds its tokens and runs the encoder and the
    pooling on its last ``w`` columns only
    (:meth:`~fuxictr_mmctr.data.history_plan.HistoryPlan.encode_in_buckets`, no device sync);
    the skipped columns are padding, whose outputs are zeroed anyway, and the last-k block is
    left-padded with zeros when ``w < k``. Same result as the unpacked encoder up to float
    rounding, same batch composition. Under ``torch.compile`` the whole batch runs at its
    (trimmed) width in one graph. ``packed = False`` runs the unpacked encoder (needed to read
    attention weights of the whole padded sequence through ``layer.self_attn`` hooks: a packed
    forward calls each layer once per group). The legacy mask depends on padding and never
    packs (``packable`` is false; setting ``packed = True`` is an error).

    Args:
        item_dim: width ``D`` of one item representation.
        num_layers, num_heads, dim_feedforward, dropout: of ``nn.TransformerEncoder`` (post-norm,
            ReLU, ``batch_first``).
        first_k_cols: ``k``, how many of the most recent positions are flattened into the output.
        concat_max_pool: add the Linear of the masked max-pool over all positions.
        target_concat: concatenate the target to every history token.
        legacy_mask: reproduce the published, inverted padding mask (see above).

    ``forward(target_emb (B, D), history (B, L, D) or JaggedHistory, history_mask (B, L) bool)
    -> (B, output_dim)`` with ``output_dim = (k + concat_max_pool) * T``.

    Example::

        arch = TargetAwareTransformer(item_dim=256, first_k_cols=16)
        sequence_out = arch(target_emb, history_emb, item_seq > 0)   # (B, 17 * 512)
    """

    def __init__(self, item_dim: int, num_layers: int = 2, num_heads: int = 1,
                 dim_feedforward: int = 256, dropout: float = 0.2, first_k_cols: int = 16,
                 concat_max_pool: bool = True, target_concat: bool = True,
                 legacy_mask: bool = False):
        super().__init__()
        self.token_dim = item_dim * (2 if target_concat else 1)
        if num_heads < 1 or self.token_dim % num_heads:
            raise UserError(f"num_heads={num_heads} must divide the transformer token width "
                            f"{self.token_dim}")
        if first_k_cols < 0 or (first_k_cols == 0 and not concat_max_pool):
            raise UserError(f"first_k_cols={first_k_cols} with concat_max_pool={concat_max_pool} "
                            f"leaves no sequence output (first_k_cols must be >= 1)")
        self.first_k_cols = first_k_cols
        self.concat_max_pool = concat_max_pool
        self.target_concat = target_concat
        self.legacy_mask = legacy_mask
        layer = nn.TransformerEncoderLayer(self.token_dim, num_heads, dim_feedforward, dropout,
                                           batch_first=True)
        # Nested tensors would zero padded outputs in eval only (train/eval mismatch in legacy
        # mode); they are unsupported for odd head counts anyway.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.max_pool_linear = (nn.Linear(self.token_dim, self.token_dim) if concat_max_pool
                                else None)
        self.output_dim = (first_k_cols + int(concat_max_pool)) * self.token_dim

    #: Why :attr:`packable` is false (the legacy mask).
    unpackable_reason = "legacy_mask makes its output depend on the padding"

    @property
    def packable(self) -> bool:
        """Whether skipping padding is exact: with the correct mask only."""
        return not self.legacy_mask

    def forward(self, target_emb: torch.Tensor, history, history_mask: torch.Tensor
                ) -> torch.Tensor:
        """``(B, D)``, history ``(B, L, D)`` or jagged, ``(B, L) bool`` -> ``(B, output_dim)``."""
        jagged = packed_history(self, history)
        if jagged is None:
            return self.encode(self.tokens(target_emb, dense_history(history)), history_mask)
        key_padding_mask, kept = self.attention_masks(history_mask)
        padded = jagged.dense()

        def encode_rows(rows, start):
            """Encoder outputs of ``rows`` (``None``: all) over columns ``start..``."""
            if rows is None:
                tokens = self.tokens(target_emb, padded[:, start:])
                return self.encoder(tokens, src_key_padding_mask=key_padding_mask[:, start:])
            tokens = self.tokens(target_emb[rows], padded[rows, start:])
            return self.encoder(tokens, src_key_padding_mask=key_padding_mask[rows, start:])

        def pool_rows(encoded, rows, start):
            return self.pool(encoded, kept[:, start:] if rows is None else kept[rows, start:])

        return jagged.plan.encode_in_buckets(encode_rows, pool_rows)

    def tokens(self, target_emb: torch.Tensor, history_emb: torch.Tensor) -> torch.Tensor:
        """Encoder input ``(B, L, T)``: every history item, with the target when concatenated."""
        if not self.target_concat:
            return history_emb
        target = target_emb.unsqueeze(-2).expand_as(history_emb)
        return torch.cat([history_emb, target], dim=-1)

    def attention_masks(self, history_mask: torch.Tensor):
        """``(B, L) bool -> (key_padding_mask, kept)``, both ``(B, L) bool``.

        ``key_padding_mask`` is ``True`` where attention ignores a key; ``kept`` is ``True`` at
        the positions whose outputs feed the last-k block and the max-pool.
        """
        if self.legacy_mask:
            key_padding_mask = keep_one_key(history_mask)
            return key_padding_mask, ~key_padding_mask
        return keep_one_key(~history_mask), history_mask

    def encode(self, tokens: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """Unpacked encoder + pooling on ready tokens: ``(B, L, T)``, ``(B, L) bool -> (B,
        output_dim)``."""
        key_padding_mask, kept = self.attention_masks(history_mask)
        return self.pool(self.encoder(tokens, src_key_padding_mask=key_padding_mask), kept)

    def pool(self, encoded: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The sequence output from encoder outputs: ``(B, W, T)``, ``(B, W) bool -> (B,
        output_dim)``: outputs where not ``kept`` zeroed, the last ``k`` flattened (left-padded
        with zeros when ``W < k``) beside the Linear of the masked max-pool."""
        encoded = encoded.masked_fill(~kept.unsqueeze(-1), 0.0)
        parts = []
        if self.first_k_cols:
            parts.append(last_k(encoded, self.first_k_cols).flatten(start_dim=-2))
        if self.max_pool_linear is not None:
            parts.append(self.max_pool_linear(masked_max(encoded, kept)))
        return torch.cat(parts, dim=-1)
