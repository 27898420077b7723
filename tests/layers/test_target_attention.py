"""TargetAttentionPooling and masked_softmax: DIN's weights, the softmax option, padding, finiteness."""
from __future__ import annotations

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.target_attention import TargetAttentionPooling, masked_softmax

B, L, D = 4, 6, 5
LENGTHS = torch.tensor([3, 1, 0, L])


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    target_emb = torch.randn(B, D, generator=generator)
    mask = torch.arange(L).unsqueeze(0) >= (L - LENGTHS).unsqueeze(1)   # left-padded
    history_emb = torch.randn(B, L, D, generator=generator) * mask.unsqueeze(-1)
    return target_emb, history_emb, mask


def make_pooling(normalization="none"):
    torch.manual_seed(0)
    return TargetAttentionPooling(D, hidden_units=(8, 4), dropout=0.1,
                                  normalization=normalization).eval()


def test_scores_are_the_mlp_of_target_item_difference_and_product():
    pooling = make_pooling()
    target_emb, history_emb, _ = make_inputs()
    b, i = 0, 4
    t, h = target_emb[b], history_emb[b, i]
    expected = pooling.scorer(torch.cat([t, h, t - h, t * h]).unsqueeze(0)).squeeze()
    torch.testing.assert_close(pooling.scores(target_emb, history_emb)[b, i], expected)


def test_unnormalised_weights_are_scores_times_mask_and_pool_by_hand():
    pooling = make_pooling("none")
    target_emb, history_emb, mask = make_inputs()
    scores = pooling.scores(target_emb, history_emb)
    weights = pooling.attention_weights(target_emb, history_emb, mask)
    torch.testing.assert_close(weights, scores * mask)
    assert (weights[~mask] == 0).all()
    pooled = pooling(target_emb, history_emb, mask)
    for b in range(B):
        by_hand = sum(weights[b, i] * history_emb[b, i] for i in range(L))
        torch.testing.assert_close(pooled[b], by_hand)


def test_softmax_weights_sum_to_one_over_real_items_and_are_zero_at_padding():
    pooling = make_pooling("softmax")
    target_emb, history_emb, mask = make_inputs()
    weights = pooling.attention_weights(target_emb, history_emb, mask)
    assert (weights[~mask] == 0).all()
    has_history = LENGTHS > 0
    torch.testing.assert_close(weights[has_history].sum(-1), torch.ones(int(has_history.sum())))
    assert (weights[~has_history] == 0).all()


def test_the_two_normalisations_give_different_outputs():
    target_emb, history_emb, mask = make_inputs()
    none, softmax = make_pooling("none"), make_pooling("softmax")
    softmax.load_state_dict(none.state_dict())
    assert not torch.allclose(none(target_emb, history_emb, mask),
                              softmax(target_emb, history_emb, mask))


@pytest.mark.parametrize("normalization", ["none", "softmax"])
def test_values_at_padding_positions_do_not_matter_and_empty_rows_stay_finite(normalization):
    pooling = make_pooling(normalization)
    target_emb, history_emb, mask = make_inputs()
    noisy = history_emb + 100 * torch.randn(B, L, D) * (~mask).unsqueeze(-1)
    torch.testing.assert_close(pooling(target_emb, noisy, mask),
                               pooling(target_emb, history_emb, mask))
    history_emb.requires_grad_(True)
    empty = torch.zeros_like(mask)
    out = pooling(target_emb, history_emb, empty)
    out.sum().backward()
    assert (out == 0).all() and torch.isfinite(history_emb.grad).all()


def test_masked_softmax_rows_without_kept_positions_give_zeros_and_finite_gradients():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[False, True, True], [False, False, False]])
    weights = masked_softmax(scores, mask)
    expected = torch.softmax(torch.tensor([2.0, 3.0]), -1)
    torch.testing.assert_close(weights[0], torch.cat([torch.zeros(1), expected]))
    assert (weights[1] == 0).all()
    (weights * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_unknown_normalization_is_a_one_line_user_error():
    with pytest.raises(UserError, match="normalization") as error:
        TargetAttentionPooling(D, normalization="sparsemax")
    assert "\n" not in str(error.value)
