"""CrossDeepArch (DCNv2 cross || MLP) and PredictionHead: maths, widths, parameter counts."""
from __future__ import annotations

import pytest
import torch

from fuxictr_mmctr.layers.cross_deep import CrossDeepArch
from fuxictr_mmctr.layers.prediction_head import PredictionHead

F = 7


def test_cross_part_follows_the_dcnv2_recurrence_and_deep_part_is_concatenated():
    torch.manual_seed(0)
    arch = CrossDeepArch(F, cross_layers=2, hidden_units=[5, 3]).eval()
    features = torch.randn(4, F)
    out = arch(features)
    assert arch.output_dim == F + 3 and out.shape == (4, F + 3)
    x = features
    for layer in arch.cross_net.cross_layers:   # x_{l+1} = x_0 * (W_l x_l + b_l) + x_l
        x = features * (x @ layer.weight.T + layer.bias) + x
    torch.testing.assert_close(out[:, :F], x)
    torch.testing.assert_close(out[:, F:], arch.deep_net(features))


@pytest.mark.parametrize("use_cross,hidden_units,width", [
    (False, [5, 3], 3), (True, [], 2 * F), (False, [], F)])
def test_ablations_change_the_output_width(use_cross, hidden_units, width):
    arch = CrossDeepArch(F, cross_layers=3, hidden_units=hidden_units, use_cross=use_cross)
    assert arch.output_dim == width and arch(torch.randn(2, F)).shape == (2, width)
    assert (arch.cross_net is not None) == use_cross


def test_cross_network_has_full_rank_layers():
    arch = CrossDeepArch(F, cross_layers=3, hidden_units=[4])
    assert sum(p.numel() for p in arch.cross_net.parameters()) == 3 * (F * F + F)


def test_batch_norm_and_dropout_reach_the_deep_part():
    arch = CrossDeepArch(F, hidden_units=[4, 4], dropout=0.5, batch_norm=True)
    kinds = {type(m).__name__ for m in arch.deep_net.modules()}
    assert {"BatchNorm1d", "Dropout"} <= kinds


def test_prediction_head_returns_one_raw_logit_per_row():
    torch.manual_seed(0)
    head = PredictionHead(F, hidden_units=[])
    linear = head.mlp.mlp[0]
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.fill_(0.0)
    features = torch.ones(3, F)
    torch.testing.assert_close(head(features), torch.full((3, 1), float(F)))  # no sigmoid
    assert PredictionHead(F, hidden_units=[8, 4])(features).shape == (3, 1)
