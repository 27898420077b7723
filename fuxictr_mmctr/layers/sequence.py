"""History masks and masked pooling over a left-padded item history.

Conventions (the data contract, ``fuxictr_mmctr/data/schema.py``): ``item_seq`` is ``(B, L)`` int, left-padded with id 0, most recent
item last. A *history mask* is ``True`` at real items. PyTorch's ``src_key_padding_mask`` has the
opposite polarity (``True`` = ignore); the two are never mixed up outside
:mod:`fuxictr_mmctr.layers.target_aware_transformer`.

Every model pools the history with these functions; ``masked_mean`` has its one implementation
in :mod:`fuxictr_mmctr.layers.embedding` (the item encoder pools tags with it) and is re-exported
here so that sequence code has one place to import pooling from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fuxictr_mmctr.data.schema import PADDING_ID
from fuxictr_mmctr.layers.embedding import masked_mean


def history_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """Real-item positions: ``item_seq (B, L) int -> (B, L) bool`` (``True`` = real item)."""
    return item_seq != PADDING_ID


def truncate_history(item_seq: torch.Tensor, max_len: int | None) -> torch.Tensor:
    """Keep the ``max_len`` most recent positions: ``(B, L) -> (B, min(L, max_len))``.

    Histories are left-padded with the most recent item last, so the kept part is the right end.
    ``None`` keeps everything.
    """
    if max_len is None or item_seq.shape[-1] <= max_len:
        return item_seq
    return item_seq[..., -max_len:]


def keep_one_key(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Un-ignore the last position of rows whose every key is ignored.

    ``(B, L) bool`` (``True`` = ignore, PyTorch's ``src_key_padding_mask``) -> ``(B, L) bool``.
    Softmax over keys that are all masked is ``0/0 = NaN``; one attended key keeps the encoder
    finite. A new tensor is returned (the caller's mask is not modified).
    """
    all_ignored = key_padding_mask.all(dim=-1, keepdim=True)
    last = torch.zeros_like(key_padding_mask)
    last[..., -1] = True
    return key_padding_mask & ~(all_ignored & last)


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over kept positions: ``values (B, L, D)``, ``mask (B, L) bool -> (B, D)``.

    Rows with no kept position give zeros (finite values and zero gradients, never
    ``-inf``/NaN).
    """
    lowest = torch.finfo(values.dtype).min
    filled = values.masked_fill(~mask.unsqueeze(-1), lowest)
    pooled = filled.amax(dim=-2)
    has_any = mask.any(dim=-1, keepdim=True)
    return torch.where(has_any, pooled, torch.zeros_like(pooled))


def last_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most recent positions: ``values (B, L, D) -> (B, k, D)``.

    When ``L < k`` the result is left-padded with zero rows, so its width does not depend on the
    history length (the same convention as the left-padded history itself). One code path for
    every ``L`` (``k`` zero rows in front, then the last ``k`` rows): no branch on the length,
    so ``torch.export`` keeps ``L`` dynamic down to 1.
    """
    return F.pad(values, (0, 0, k, 0))[..., -k:, :]


__all__ = ["history_mask", "keep_one_key", "last_k", "masked_max", "masked_mean",
           "truncate_history"]
