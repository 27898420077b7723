"""RecencyPositionalEmbedding: sinusoidal start, positions counted from the most recent end."""
from __future__ import annotations

import math

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.positional import RecencyPositionalEmbedding, sinusoidal_table


def test_sinusoidal_table_follows_the_formula():
    table = sinusoidal_table(7, 6)
    for p in range(7):
        for j in range(3):
            angle = p / 10000 ** (2 * j / 6)
            assert table[p, 2 * j].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * j + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sinusoidal_table(4, 5).shape == (4, 5)      # odd widths work too


def test_the_table_is_learnable_and_starts_sinusoidal():
    layer = RecencyPositionalEmbedding(5, 4)
    assert layer.weight.requires_grad
    torch.testing.assert_close(layer.weight.detach(), sinusoidal_table(5, 4))
    with torch.no_grad():
        layer.weight.zero_()
    layer.init_weights()
    torch.testing.assert_close(layer.weight.detach(), sinusoidal_table(5, 4))


def test_positions_count_from_the_last_token_and_clamp_beyond_the_table():
    layer = RecencyPositionalEmbedding(4, 2)
    assert layer.positions(3).tolist() == [2, 1, 0]
    assert layer.positions(6).tolist() == [3, 3, 3, 2, 1, 0]


def test_concat_appends_the_position_vector_last_token_gets_row_0():
    layer = RecencyPositionalEmbedding(6, 3)
    tokens = torch.randn(2, 4, 5)
    out = layer(tokens)
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(out[..., :5], tokens)
    for j in range(4):
        torch.testing.assert_close(out[:, j, 5:], layer.weight[3 - j].expand(2, 3))


def test_extra_left_tokens_leave_the_right_end_unchanged():
    layer = RecencyPositionalEmbedding(6, 3)
    tokens = torch.randn(2, 4, 5)
    longer = torch.cat([torch.zeros(2, 5, 5), tokens], dim=1)      # 9 tokens > 6 positions
    torch.testing.assert_close(layer(longer)[:, -4:], layer(tokens))


def test_add_mode_and_gradients():
    layer = RecencyPositionalEmbedding(3, 4, mode="add")
    tokens = torch.randn(2, 3, 4)
    out = layer(tokens)
    torch.testing.assert_close(out, tokens + layer.weight.flip(0))
    out.sum().backward()
    assert torch.equal(layer.weight.grad, torch.full((3, 4), 2.0))


@pytest.mark.parametrize("kwargs", [{"mode": "sum"}, {"num_positions": 0}, {"dim": 0}])
def test_bad_arguments_are_one_line_user_errors(kwargs):
    arguments = {"num_positions": 3, "dim": 4, **kwargs}
    with pytest.raises(UserError) as error:
        RecencyPositionalEmbedding(**arguments)
    assert "\n" not in str(error.value)
