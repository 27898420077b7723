"""MaskedGRU, AUGRU and BilinearAttention: exact recurrences over left-padded histories."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fuxictr_mmctr.layers.interest_gru import AUGRU, BilinearAttention, MaskedGRU

I, H, L = 5, 7, 9


def left_padded(lengths, seed=0, width=I):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    mask = torch.arange(L).unsqueeze(0) >= (L - lengths).unsqueeze(1)
    values = torch.randn(len(lengths), L, width, generator=generator) * mask.unsqueeze(-1)
    return values, mask


def right_aligned(values, mask):
    """The same real items moved to the front of each row (padding after them)."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    moved = torch.gather(values, 1, order.unsqueeze(-1).expand_as(values))
    return moved, torch.gather(mask, 1, order)


def torch_gru_of(cell: MaskedGRU) -> nn.GRU:
    gru = nn.GRU(cell.input_dim, cell.hidden_dim, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(cell.weight_ih)
        gru.weight_hh_l0.copy_(cell.weight_hh)
        gru.bias_ih_l0.copy_(cell.bias_ih)
        gru.bias_hh_l0.copy_(cell.bias_hh)
    return gru


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_gru_equals_torch_gru_over_the_real_items_only(seed):
    torch.manual_seed(seed)
    lengths = torch.randint(0, L + 1, (12,))
    lengths[:2] = torch.tensor([0, L])
    inputs, mask = left_padded(lengths, seed)
    extractor = MaskedGRU(I, H)
    gru = torch_gru_of(extractor)
    states, final = extractor(inputs, mask)
    assert states.shape == (12, L, H) and final.shape == (12, H)
    for row, n in enumerate(lengths.tolist()):
        assert (states[row, :L - n] == 0).all()
        if n == 0:
            assert (final[row] == 0).all()
            continue
        expected_states, expected_final = gru(inputs[row:row + 1, L - n:])
        torch.testing.assert_close(states[row, L - n:], expected_states[0])
        torch.testing.assert_close(final[row], expected_final[0, 0])


def test_masked_gru_is_the_same_for_left_padded_and_right_aligned_histories():
    torch.manual_seed(0)
    extractor = MaskedGRU(I, H)
    inputs, mask = left_padded([3, 0, L, 1, 6])
    moved, moved_mask = right_aligned(inputs, mask)
    states, final = extractor(inputs, mask)
    moved_states, moved_final = extractor(moved, moved_mask)
    torch.testing.assert_close(moved_final, final)
    torch.testing.assert_close(moved_states[moved_mask], states[mask])


def test_augru_scales_the_update_gate_by_the_attention_weight():
    torch.manual_seed(0)
    evolution = AUGRU(I, H)
    inputs, mask = left_padded([L, L])
    h0 = torch.randn(2, H)
    attention = torch.rand(2, L)
    _, final = evolution(inputs[:, :1], attention[:, :1], mask[:, :1], h0=h0)
    gates_x = inputs[:, 0] @ evolution.weight_ih.T + evolution.bias_ih
    gates_h = h0 @ evolution.weight_hh.T + evolution.bias_hh
    r = torch.sigmoid(gates_x[:, :H] + gates_h[:, :H])
    u = 1 - torch.sigmoid(gates_x[:, H:2 * H] + gates_h[:, H:2 * H])
    n = torch.tanh(gates_x[:, 2 * H:] + r * gates_h[:, 2 * H:])
    scaled = attention[:, :1] * u
    torch.testing.assert_close(final, (1 - scaled) * h0 + scaled * n)


def test_augru_with_unit_attention_is_the_gru_and_zero_attention_keeps_the_state():
    torch.manual_seed(0)
    evolution = AUGRU(I, H)
    extractor = MaskedGRU(I, H)
    extractor.load_state_dict(evolution.state_dict())
    inputs, mask = left_padded([4, L, 0])
    torch.testing.assert_close(evolution(inputs, torch.ones(3, L), mask)[1],
                               extractor(inputs, mask)[1])
    h0 = torch.randn(3, H)
    torch.testing.assert_close(evolution(inputs, torch.zeros(3, L), mask, h0=h0)[1], h0)


def test_augru_ignores_attention_and_inputs_at_padding_and_matches_right_aligned_rows():
    torch.manual_seed(0)
    evolution = AUGRU(I, H)
    inputs, mask = left_padded([3, 0, L, 5])
    attention = torch.rand(4, L) * mask
    _, final = evolution(inputs, attention, mask)
    noisy_inputs = inputs + 10 * torch.randn_like(inputs) * (~mask).unsqueeze(-1)
    noisy_attention = attention + (~mask).float()
    torch.testing.assert_close(evolution(noisy_inputs, noisy_attention, mask)[1], final)
    moved, moved_mask = right_aligned(inputs, mask)
    moved_attention, _ = right_aligned(attention.unsqueeze(-1), mask)
    torch.testing.assert_close(evolution(moved, moved_attention.squeeze(-1), moved_mask)[1],
                               final)


def test_empty_histories_keep_finite_gradients():
    torch.manual_seed(0)
    extractor, evolution, attention = MaskedGRU(I, H), AUGRU(H, H), BilinearAttention(H, I)
    inputs, mask = left_padded([0, 0, 2])
    inputs.requires_grad_(True)
    target = torch.randn(3, I)
    states, _ = extractor(inputs, mask)
    weights = attention(target, states, mask)
    _, interest = evolution(states, weights, mask)
    interest.sum().backward()
    assert (interest[:2] == 0).all() and (weights[:2] == 0).all()
    assert torch.isfinite(inputs.grad).all()
    assert all(torch.isfinite(p.grad).all() for module in (extractor, evolution, attention)
               for p in module.parameters())


def test_bilinear_attention_is_a_masked_softmax_of_state_w_target():
    torch.manual_seed(0)
    attention = BilinearAttention(H, I)
    assert torch.equal(attention.weight, torch.eye(H, I))
    with torch.no_grad():
        attention.weight.normal_()
    states, mask = left_padded([3, L, 0], width=H)
    target = torch.randn(3, I)
    weights = attention(target, states, mask)
    expected = torch.softmax(states[0, -3:] @ attention.weight @ target[0], dim=-1)
    torch.testing.assert_close(weights[0, -3:], expected)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2))
