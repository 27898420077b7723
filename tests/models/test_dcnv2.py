"""DCNv2: the history through its masked mean, full rank vs the low-rank mixture, size."""
from __future__ import annotations

import functools

import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.cross_deep import LowRankMixtureCrossNet
from fuxictr_mmctr.models.dcnv2 import DCNv2
from tests.models.builders import (
    B,
    LENGTHS,
    history_change,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    tiny_transformer_dcn,
    trainable_parameters,
)

#: A tiny DCNv2 (embedding_dim 8 -> item width 8 + 8 + 16 = 32, F = 16 + 2 * 32 = 80).
make_model = functools.partial(tiny_model, DCNv2, dcn_cross_layers=2, dnn_hidden_units=[32, 16])


def cross_parameters(model):
    return sum(p.numel() for p in model.cross_deep.cross_net.parameters())


@pytest.mark.parametrize("mixture", [False, True])
def test_forward_shape_and_every_parameter_learns(tmp_path, mixture):
    model = make_model(tmp_path, use_low_rank_mixture=mixture, low_rank=4, num_experts=3)
    model.train()
    assert model.dcn_input_dim == 2 * 8 + 2 * 32
    logit = model(make_batch())["logit"]
    assert logit.shape == (B, 1) and torch.isfinite(logit).all()
    model.trainer.compute_loss(make_batch()).backward()
    no_grad = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_the_head_is_one_linear_over_cross_and_deep_outputs(tmp_path):
    model = make_model(tmp_path)
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 80 + 16
    assert linears[0].out_features == 1


def test_a_real_history_item_changes_the_output_through_the_mean(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    diff = history_change(model, batch)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all()
    assert diff[~has_history].max() == 0.0


def test_padding_and_history_order_do_not_change_the_output(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    history = batch[contract.ITEM_SEQ]
    padded = torch.cat([torch.zeros_like(history[:, :5]), history], dim=1)
    torch.testing.assert_close(predict(model, dict(batch, **{contract.ITEM_SEQ: padded})),
                               predict(model, batch))
    # A mean: the order of the real items does not matter (left padding kept in place).
    reordered = history.clone()
    for row, length in enumerate(LENGTHS):
        if length > 1:
            reordered[row, -length:] = history[row, -length:].flip(0)
    torch.testing.assert_close(predict(model, dict(batch, **{contract.ITEM_SEQ: reordered})),
                               predict(model, batch))


def test_full_rank_and_low_rank_mixture_parameter_counts(tmp_path):
    f = 80
    full = make_model(tmp_path)
    assert cross_parameters(full) == 2 * (f * f + f)
    ignored = make_model(tmp_path, use_low_rank_mixture=False, low_rank=3)
    assert cross_parameters(ignored) == 2 * (f * f + f)
    mixture = make_model(tmp_path, use_low_rank_mixture=True, low_rank=4, num_experts=3)
    assert isinstance(mixture.cross_deep.cross_net, LowRankMixtureCrossNet)
    assert cross_parameters(mixture) == 2 * (3 * (2 * f * 4 + 4 * 4) + f) + 3 * f
    assert mixture.cross_deep.output_dim == full.cross_deep.output_dim


@pytest.mark.parametrize("bad", [{"model_structure": "stacked"},
                                 {"use_low_rank_mixture": "yes"},
                                 {"use_low_rank_mixture": True, "low_rank": 0}])
def test_bad_options_are_one_line_user_errors(tmp_path, bad):
    with pytest.raises(UserError) as error:
        make_model(tmp_path, **bad)
    assert "\n" not in str(error.value)


# --- size of the DCNv2_MicroLens configuration ---------------------------------------------

def test_real_configuration_parameter_count(tmp_path, monkeypatch):
    """DCNv2_MicroLens at real sizes: full-rank cross layers (use_low_rank_mixture False)."""
    model = real_size_model("DCNv2_MicroLens", tmp_path, monkeypatch)
    f = 2 * 64 + 2 * 256
    assert model.dcn_input_dim == f == 640
    embeddings = (contract.NUM_ITEMS + 1) * 64 + contract.TAG_VOCAB * 64 + 2 * 11 * 64
    cross = 3 * (f * f + f)
    deep = (f * 500 + 500) + 2 * (500 * 500 + 500)
    head = f + 500 + 1
    assert cross_parameters(model) == cross == 1_230_720
    assert trainable_parameters(model) == embeddings + cross + deep + head == 8_676_081


def test_real_configuration_with_the_low_rank_mixture(tmp_path, monkeypatch):
    model = real_size_model("DCNv2_MicroLens", tmp_path, monkeypatch, use_low_rank_mixture=True)
    f = 640
    assert cross_parameters(model) == 3 * (4 * (2 * f * 32 + 32 * 32) + f) + 4 * f == 508_288
    assert trainable_parameters(model) == 8_676_081 - 1_230_720 + 508_288 == 7_953_649


# --- the same mixture as an option of Transformer_DCN --------------------------------------

def test_transformer_dcn_takes_the_low_rank_mixture_as_an_option(tmp_path, monkeypatch):
    """``dcn_low_rank`` (default None: the paper's full rank) at paper sizes: F = 9088."""
    model = real_size_model("Transformer_DCN_MicroLens", tmp_path, monkeypatch,
                            dcn_low_rank=32, dcn_num_experts=4)
    f = 9088
    assert isinstance(model.cross_deep.cross_net, LowRankMixtureCrossNet)
    assert cross_parameters(model) == 3 * (4 * (2 * f * 32 + 32 * 32) + f) + 4 * f == 7_055_488
    total = trainable_parameters(model)
    assert total == 267_882_497 - 3 * (f * f + f) + 7_055_488 == 27_135_489


def test_transformer_dcn_with_the_mixture_trains_every_parameter(tmp_path):
    model = tiny_transformer_dcn(tmp_path, dcn_low_rank=4, dcn_num_experts=2).train()
    assert isinstance(model.cross_deep.cross_net, LowRankMixtureCrossNet)
    model.trainer.compute_loss(make_batch()).backward()
    no_grad = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
