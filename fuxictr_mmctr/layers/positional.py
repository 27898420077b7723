"""RecencyPositionalEmbedding: learnable positions counted from the most recent end."""
from __future__ import annotations

import math

import torch
from torch import nn

from fuxictr_mmctr.errors import UserError

POSITION_MODES = ("concat", "add")


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    r"""The sinusoidal encoding of Vaswani et al. (2017): ``(num_positions, dim)``.

    ::

        table[p, 2j]     = sin(p / 10000^(2j / dim))
        table[p, 2j + 1] = cos(p / 10000^(2j / dim))
    """
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32)
                          * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class RecencyPositionalEmbedding(nn.Module):
    r"""A learnable position vector per token, position 0 being the **last** (most recent) token.

    For a sequence of ``N`` tokens ``x_0 .. x_{N-1}`` (oldest first, most recent last)::

        p_j   = min(N - 1 - j, num_positions - 1)          position of token j
        out_j = [x_j || E[p_j]]        (mode "concat": width D + P)
        out_j = x_j + E[p_j]           (mode "add": P must equal D)

    ``E`` is a ``(num_positions, P)`` parameter initialised with the sinusoidal table
    (:func:`sinusoidal_table`) and trained with the model.

    Why count from the right: histories are left-padded (most recent item last). Counting from
    the left would give the same item a different position whenever the batch carries more (or
    less) left padding, so the output would depend on the padding width. Counted from the right,
    a real item's position is its recency (the target token appended last is position 0, the most
    recent history item 1, ...), whatever the padding. Positions beyond the table (only padding,
    when the sequence is no longer than ``num_positions``) share its last row.

    FuxiCTR's BST indexes its table from the left of a fixed-length sequence; for full-length,
    unpadded batches the two differ only by the order of the table's initial values.

    Args:
        num_positions: rows of the table (e.g. ``max_len + 1`` for a history plus a target).
        dim: ``P``, the width of a position vector.
        mode: ``"concat"`` (BST) or ``"add"``.

    ``forward(tokens (B, N, D)) -> (B, N, D + P)`` (concat) or ``(B, N, D)`` (add).

    Example::

        positions = RecencyPositionalEmbedding(num_positions=65, dim=64)
        tokens = positions(torch.cat([history_emb, target_emb.unsqueeze(1)], dim=1))
        # (B, 65, 256) -> (B, 65, 320); tokens[:, -1, 256:] is E[0]
    """

    def __init__(self, num_positions: int, dim: int, mode: str = "concat"):
        super().__init__()
        if mode not in POSITION_MODES:
            raise UserError(f"positional embedding mode must be one of {POSITION_MODES}, "
                            f"got {mode!r}")
        if int(num_positions) < 1 or int(dim) < 1:
            raise UserError(f"positional embedding needs num_positions >= 1 and dim >= 1, got "
                            f"{num_positions} and {dim}")
        self.num_positions = int(num_positions)
        self.dim = int(dim)
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(self.num_positions, self.dim))
        self.init_weights()

    def init_weights(self) -> None:
        """Sinusoidal initial values (FuxiCTR's model init calls ``init_weights`` hooks)."""
        with torch.no_grad():
            self.weight.copy_(sinusoidal_table(self.num_positions, self.dim))

    def positions(self, length: int, device=None) -> torch.Tensor:
        """Position index of each of ``length`` tokens: ``(length,) int64``, last token = 0."""
        recency = torch.arange(length - 1, -1, -1, device=device)
        return recency.clamp(max=self.num_positions - 1)

    def table(self, length: int) -> torch.Tensor:
        """Position vectors of ``length`` tokens, oldest first: ``(length, P)``."""
        return self.weight[self.positions(length, self.weight.device)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D + P)`` (concat) or ``(B, N, D)`` (add)."""
        position = self.table(tokens.shape[-2]).to(tokens.dtype)
        if self.mode == "add":
            return tokens + position
        return torch.cat([tokens, position.expand(*tokens.shape[:-1], self.dim)], dim=-1)
