"""QuadraticLayer and QuadraticInteractionNetwork: the maths, the order, the sizes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.quadratic import QuadraticInteractionNetwork, QuadraticLayer

F, R = 6, 3


def test_quadratic_layer_is_x_times_a_sum_of_r_linear_maps():
    torch.manual_seed(0)
    layer = QuadraticLayer(F, rank=R)
    x = torch.randn(5, F)
    weight, bias = layer.linear.weight.view(R, F, F), layer.linear.bias.view(R, F)
    expected = x * sum(x @ weight[r].T + bias[r] for r in range(R))
    torch.testing.assert_close(layer(x), expected)
    assert sum(p.numel() for p in layer.parameters()) == R * (F * F + F)


def test_network_adds_the_residual_after_norm_activation_and_dropout():
    torch.manual_seed(0)
    network = QuadraticInteractionNetwork(F, num_layers=2, rank=R, dropout=0.0,
                                          batch_norm=True).eval()
    with torch.no_grad():
        for norm in network.norms:
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
        for activation in network.activations:
            activation.weight.fill_(0.1)
    x = torch.randn(4, F)
    expected = x
    for layer, norm in zip(network.layers, network.norms):
        term = norm(layer(expected))
        expected = expected + torch.where(term > 0, term, 0.1 * term)
    torch.testing.assert_close(network(x), expected)


def test_a_zero_quadratic_term_passes_the_input_through():
    network = QuadraticInteractionNetwork(F, num_layers=3, rank=R, dropout=0.1).eval()
    with torch.no_grad():
        for layer in network.layers:
            layer.linear.weight.zero_()
            layer.linear.bias.zero_()
    x = torch.randn(4, F)
    assert torch.equal(network(x), x)


def test_size_at_qin_dimensions():
    with torch.device("meta"):
        network = QuadraticInteractionNetwork(1024, num_layers=4, rank=4, batch_norm=True)
    per_layer = 4 * (1024 * 1024 + 1024) + 2 * 1024 + 1
    assert sum(p.numel() for p in network.parameters()) == 4 * per_layer == 16_801_796
    assert network.output_dim == 1024


def test_dropout_in_training_only_and_no_batch_norm_option():
    torch.manual_seed(0)
    network = QuadraticInteractionNetwork(F, num_layers=2, rank=R, dropout=0.5,
                                          batch_norm=False)
    assert all(isinstance(norm, nn.Identity) for norm in network.norms)
    x = torch.randn(8, F)
    network.train()
    assert not torch.equal(network(x), network(x))
    network.eval()
    assert torch.equal(network(x), network(x))


@pytest.mark.parametrize("kwargs", [{"num_layers": 0}, {"rank": 0}, {"dropout": 1.0}])
def test_bad_arguments_are_one_line_user_errors(kwargs):
    with pytest.raises(UserError) as error:
        QuadraticInteractionNetwork(F, **kwargs)
    assert "\n" not in str(error.value)
