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


# --- the mixture of low-rank experts (DCN-Mix) ---------------------------------------------

from fuxictr_mmctr.errors import UserError  # noqa: E402
from fuxictr_mmctr.layers.cross_deep import LowRankMixtureCrossNet  # noqa: E402


def mixture_parameters(f, layers, rank, experts):
    """``layers * (E (2 F r + r^2) + F) + E F``: U, V, C per expert and layer, a bias per layer,
    one bias-free gate shared by the layers."""
    return layers * (experts * (2 * f * rank + rank * rank) + f) + experts * f


def test_mixture_follows_the_gated_expert_recurrence():
    torch.manual_seed(0)
    net = LowRankMixtureCrossNet(F, num_layers=2, low_rank=3, num_experts=4)
    with torch.no_grad():
        net.bias.normal_()
    features = torch.randn(5, F)
    x0 = x = features
    for layer in range(2):          # sum_i softmax_i(G x_l) E_i(x_l) + x_l, expert by expert
        gates = torch.softmax(x @ net.gate.weight.T, dim=-1)
        mixed = torch.zeros_like(x)
        for i in range(4):
            U, V, C = net.U[layer, i], net.V[layer, i], net.C[layer, i]
            expert = x0 * (torch.tanh(torch.tanh(x @ V) @ C.T) @ U.T + net.bias[layer])
            mixed = mixed + gates[:, i:i + 1] * expert
        x = mixed + x
    torch.testing.assert_close(net(features), x)


def test_mixture_option_builds_trains_and_keeps_the_output_width():
    torch.manual_seed(0)
    arch = CrossDeepArch(F, cross_layers=3, hidden_units=[5, 3], cross_low_rank=4,
                         cross_num_experts=2)
    assert isinstance(arch.cross_net, LowRankMixtureCrossNet)
    assert arch.output_dim == F + 3
    out = arch(torch.randn(6, F))
    assert out.shape == (6, F + 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [name for name, p in arch.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_full_rank_stays_the_default():
    assert type(CrossDeepArch(F).cross_net).__name__ == "CrossNetV2"
    assert CrossDeepArch(F, cross_low_rank=None, cross_num_experts=9).cross_net.num_layers == 3


@pytest.mark.parametrize("f,layers,rank,experts", [(7, 1, 2, 1), (7, 3, 7, 1), (11, 2, 16, 3),
                                                    (5, 3, 32, 4)])
def test_mixture_parameter_count_formula(f, layers, rank, experts):
    net = LowRankMixtureCrossNet(f, num_layers=layers, low_rank=rank, num_experts=experts)
    assert sum(p.numel() for p in net.parameters()) == mixture_parameters(f, layers, rank,
                                                                          experts)


def test_mixture_has_far_fewer_parameters_than_full_rank_at_paper_width():
    """F = 9088 (Transformer_DCN's DCN input), 3 layers, FuxiCTR's rank 32 and 4 experts."""
    with torch.device("meta"):
        full = CrossDeepArch(9088, cross_layers=3, hidden_units=[]).cross_net
        mix = CrossDeepArch(9088, cross_layers=3, hidden_units=[], cross_low_rank=32,
                            cross_num_experts=4).cross_net
    full_count = sum(p.numel() for p in full.parameters())
    mix_count = sum(p.numel() for p in mix.parameters())
    assert full_count == 3 * (9088 * 9088 + 9088) == 247_802_496
    assert mix_count == mixture_parameters(9088, 3, 32, 4) == 7_055_488
    assert mix_count * 35 < full_count


def test_mixture_stays_finite_on_large_inputs_and_exports():
    torch.manual_seed(0)
    net = LowRankMixtureCrossNet(F, num_layers=3, low_rank=4, num_experts=3).eval()
    big = 1e3 * torch.randn(4, F)
    assert torch.isfinite(net(big)).all()
    program = torch.export.export(net, (torch.randn(4, F),))
    other = torch.randn(4, F)
    torch.testing.assert_close(program.module()(other), net(other))


@pytest.mark.parametrize("bad", [{"cross_low_rank": 0}, {"cross_low_rank": -3},
                                 {"cross_low_rank": 2.5}, {"cross_low_rank": "32"},
                                 {"cross_low_rank": 4, "cross_num_experts": 0}])
def test_bad_mixture_options_are_one_line_user_errors(bad):
    with pytest.raises(UserError) as error:
        CrossDeepArch(F, **bad)
    assert "\n" not in str(error.value)
