"""History masks and masked pooling: padding never leaks in, empty histories stay finite."""
from __future__ import annotations

import torch

from fuxictr_mmctr.layers import embedding
from fuxictr_mmctr.layers.sequence import (
    history_mask,
    keep_one_key,
    last_k,
    masked_max,
    masked_mean,
    truncate_history,
)


def test_history_mask_marks_real_items_of_a_left_padded_history():
    item_seq = torch.tensor([[0, 0, 7, 3], [0, 0, 0, 0], [4, 1, 2, 9]])
    expected = torch.tensor([[False, False, True, True], [False] * 4, [True] * 4])
    assert torch.equal(history_mask(item_seq), expected)


def test_truncate_history_keeps_the_most_recent_positions():
    item_seq = torch.tensor([[1, 2, 3, 4, 5], [0, 0, 0, 8, 9]])
    assert torch.equal(truncate_history(item_seq, 2), torch.tensor([[4, 5], [8, 9]]))
    assert truncate_history(item_seq, 5) is item_seq
    assert truncate_history(item_seq, 50) is item_seq
    assert truncate_history(item_seq, None) is item_seq


def test_keep_one_key_unmasks_the_last_position_of_fully_ignored_rows_only():
    key_padding_mask = torch.tensor([[True, True, True], [True, False, False], [False] * 3])
    original = key_padding_mask.clone()
    fixed = keep_one_key(key_padding_mask)
    assert torch.equal(fixed, torch.tensor([[True, True, False], [True, False, False],
                                            [False] * 3]))
    assert torch.equal(key_padding_mask, original)  # the caller's mask is untouched


def test_masked_max_ignores_masked_positions_and_gives_zeros_for_empty_rows():
    values = torch.tensor([[[1.0, -5.0], [9.0, 9.0], [-2.0, -1.0]],
                           [[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    pooled = masked_max(values, mask)
    torch.testing.assert_close(pooled, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    pooled.sum().backward()
    assert torch.isfinite(values.grad).all()
    assert values.grad[0, 1].abs().sum() == 0 and values.grad[1].abs().sum() == 0
    torch.testing.assert_close(values.grad[0], torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))


def test_masked_max_handles_all_negative_values_and_low_precision():
    values = torch.full((1, 3, 2), -1e4, dtype=torch.bfloat16)
    mask = torch.tensor([[False, True, False]])
    pooled = masked_max(values, mask)
    assert pooled.dtype == torch.bfloat16 and torch.equal(pooled, values[:, 1])


def test_last_k_takes_the_right_end_and_left_pads_short_histories_with_zeros():
    values = torch.arange(1.0, 7.0).view(1, 3, 2)   # positions [1,2], [3,4], [5,6]
    torch.testing.assert_close(last_k(values, 2), torch.tensor([[[3.0, 4.0], [5.0, 6.0]]]))
    padded = last_k(values, 5)
    assert padded.shape == (1, 5, 2)
    torch.testing.assert_close(padded[0, :2], torch.zeros(2, 2))
    torch.testing.assert_close(padded[0, 2:], values[0])


def test_masked_mean_has_one_implementation():
    assert masked_mean is embedding.masked_mean
