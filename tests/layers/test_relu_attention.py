"""ReLUTargetAttention: residual, unnormalised ReLU weights, padding."""
from __future__ import annotations

import math

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.relu_attention import ReLUTargetAttention

B, L, D = 4, 5, 6


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(B, D, generator=generator)
    history = torch.randn(B, L, D, generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 1, 0, 1, 1]],
                        dtype=torch.bool)
    return target, history, mask


def test_matches_the_formula():
    torch.manual_seed(0)
    attention = ReLUTargetAttention(D)
    assert attention.attention_dim == 2 * D and attention.W_o.bias is None
    target, history, mask = inputs()
    query, keys, values = attention.W_q(target), attention.W_k(history), attention.W_v(history)
    scores = (keys * query[:, None]).sum(-1) / math.sqrt(2 * D)
    weights = torch.relu(scores * mask)
    expected = attention.W_o((weights[..., None] * values).sum(1)) + target
    torch.testing.assert_close(attention(target, history, mask), expected)
    torch.testing.assert_close(attention.scores(target, history), scores)


def test_with_value_or_output_weights_zeroed_the_output_is_the_target():
    for name in ("W_v", "W_o"):
        attention = ReLUTargetAttention(D, attention_dim=8)
        with torch.no_grad():
            getattr(attention, name).weight.zero_()
        target, history, mask = inputs()
        assert torch.equal(attention(target, history, mask), target)


def test_weights_are_unnormalised_relus_of_the_scores():
    torch.manual_seed(1)
    attention = ReLUTargetAttention(D)
    attention.packed = False  # the same products as scores(): exact equalities below
    target, history, mask = inputs()
    scores = attention.scores(target, history)
    weights = attention.weights(target, history, mask)
    # Scaling the keys (the history) scales the pre-ReLU scores, hence every weight.
    torch.testing.assert_close(attention.scores(target, 3.0 * history), 3.0 * scores)
    torch.testing.assert_close(attention.weights(target, 3.0 * history, mask), 3.0 * weights)
    # Negative scores give zero weight; positive ones pass unchanged; nothing sums to one.
    assert (scores < 0).any() and (scores > 0).any()
    assert torch.equal(weights[mask & (scores < 0)], torch.zeros_like(scores[mask & (scores < 0)]))
    assert torch.equal(weights[mask & (scores > 0)], scores[mask & (scores > 0)])
    assert not torch.allclose(weights.sum(-1), torch.ones(B))


def test_padding_positions_get_zero_weight_whatever_they_hold():
    torch.manual_seed(2)
    attention = ReLUTargetAttention(D)
    target, history, mask = inputs()
    weights = attention.weights(target, history, mask)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    noisy = torch.where(mask[..., None], history, 100 * torch.randn_like(history))
    torch.testing.assert_close(attention(target, noisy, mask), attention(target, history, mask))
    # An empty history (row 2) gives the target back, plus the output bias when there is one.
    with_bias = ReLUTargetAttention(D, output_bias=True)
    with torch.no_grad():
        with_bias.W_o.bias.fill_(0.5)
    torch.testing.assert_close(with_bias(target, history, mask)[2], target[2] + 0.5)


def test_gradients_flow_and_bad_widths_are_user_errors():
    attention = ReLUTargetAttention(D)
    target, history, mask = inputs()
    target.requires_grad_(True)
    attention(target, history, mask).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in attention.parameters())
    with pytest.raises(UserError):
        ReLUTargetAttention(D, attention_dim=0)
