"""FactorizationMachine: the pairwise identity, the first-order term, shapes and gradients."""
from __future__ import annotations

import itertools

import torch

from fuxictr_mmctr.layers.fm import FactorizationMachine


def test_second_order_equals_the_sum_of_inner_products_over_field_pairs():
    torch.manual_seed(0)
    fields = torch.randn(6, 5, 4, dtype=torch.float64)
    explicit = sum((fields[:, i] * fields[:, j]).sum(dim=-1, keepdim=True)
                   for i, j in itertools.combinations(range(5), 2))
    second = FactorizationMachine.second_order(fields)
    assert second.shape == (6, 1)
    torch.testing.assert_close(second, explicit)


def test_one_field_has_no_pairs():
    assert torch.equal(FactorizationMachine.second_order(torch.randn(3, 1, 4)),
                       torch.zeros(3, 1))


def test_logit_is_bias_plus_per_field_linear_terms_plus_pairs():
    torch.manual_seed(0)
    fm = FactorizationMachine(num_fields=3, field_dim=4)
    with torch.no_grad():
        fm.bias.fill_(0.25)
    fields = torch.randn(7, 3, 4)
    first = 0.25 + sum(fields[:, f] @ fm.weight[f] for f in range(3)).unsqueeze(-1)
    torch.testing.assert_close(fm.first_order(fields), first)
    torch.testing.assert_close(fm(fields), first + FactorizationMachine.second_order(fields))
    assert sum(p.numel() for p in fm.parameters()) == 3 * 4 + 1


def test_every_parameter_and_field_gets_a_gradient():
    torch.manual_seed(0)
    fm = FactorizationMachine(num_fields=4, field_dim=3)
    fields = torch.randn(5, 4, 3, requires_grad=True)
    fm(fields).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fm.parameters())
    assert (fields.grad.abs().sum(dim=(0, 2)) > 0).all()
