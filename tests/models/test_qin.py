"""QIN: ReLU target attention (residual, unnormalised, padding), the interaction input, size."""
from __future__ import annotations

import functools

import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.models.qin import QIN
from fuxictr_mmctr.pipeline.experiment import load_params
from fuxictr_mmctr.training.trainer_config import TrainerConfig
from tests.models.builders import (
    B,
    CONFIG_DIR,
    L,
    NUM_ITEMS,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
)

D = 32                 # item width 8 + 8 + 16

make_model = functools.partial(tiny_model, QIN, num_layers=2, num_row=2)


def attention_output(model, batch):
    """What the attention hands to the interaction network, ``(B, D)``."""
    seen = {}
    hook = model.attention.register_forward_hook(lambda m, args, out: seen.update(out=out))
    try:
        with torch.no_grad():
            model.eval()(batch)
    finally:
        hook.remove()
    return seen["out"]


def test_widths_and_the_interaction_input(tmp_path):
    model = make_model(tmp_path)
    assert model.attention.W_q.in_features == D and model.attention.attention_dim == 2 * D
    assert model.attention.W_o.bias is None
    assert model.interaction_input_dim == 16 + D + D
    assert predict(model, make_batch()).shape == (B, 1)


def test_with_value_and_output_weights_zeroed_the_attention_output_is_the_target(tmp_path):
    model = make_model(tmp_path)
    with torch.no_grad():
        model.attention.W_v.weight.zero_()
        model.attention.W_o.weight.zero_()
    batch = make_batch()
    target = model.inputs(batch).target_emb
    assert torch.equal(attention_output(model, batch), target)


def test_weights_are_unnormalised_relus_and_padding_gets_none(tmp_path):
    model = make_model(tmp_path)
    inputs = model.inputs(make_batch())
    attention = model.attention
    with torch.no_grad():
        scores = attention.scores(inputs.target_emb, inputs.history_emb)
        weights = attention.weights(inputs.target_emb, inputs.history_emb, inputs.history_mask)
        scaled = attention.weights(inputs.target_emb, 2.0 * inputs.history_emb,
                                   inputs.history_mask)
    real = inputs.history_mask
    torch.testing.assert_close(scaled, 2.0 * weights)
    assert (weights[~real] == 0).all()
    assert (weights[real & (scores <= 0)] == 0).all()
    torch.testing.assert_close(weights[real & (scores > 0)], scores[real & (scores > 0)])


def test_the_most_recent_item_matters_exactly_where_it_has_weight(tmp_path):
    """The contract's history check, as it holds for ReLU attention: replacing the most recent
    item changes a row's output iff that item has a positive weight before or after."""
    model = make_model(tmp_path)
    batch = make_batch(seed=4, lengths=[3, 5, 1, L, 8, 1, 6, 2] * 8)
    replaced = batch[contract.ITEM_SEQ].clone()
    last = replaced[:, -1]
    replaced[:, -1] = torch.where(last > 0, last % NUM_ITEMS + 1, last)
    other = dict(batch, **{contract.ITEM_SEQ: replaced})
    diff = (predict(model, other) - predict(model, batch)).abs().reshape(-1)
    with torch.no_grad():
        weight = [model.attention.weights(i.target_emb, i.history_emb, i.history_mask)[:, -1]
                  for i in (model.inputs(batch), model.inputs(other))]
    attended = (weight[0] > 0) | (weight[1] > 0)
    assert attended.any() and (~attended).any()
    assert torch.equal(diff > 0, attended)


def test_real_expid_trains_as_published():
    params = load_params(CONFIG_DIR, "QIN_MicroLens")
    config = TrainerConfig.from_params(params)
    assert config.learning_rate == 2e-3 and config.lr_decay_factor == 0.5
    assert config.reduce_lr_on_plateau and params["batch_size"] == 8192
    assert params["embedding_regularizer"] == 2e-4 and params["max_len"] == 64
    assert params["feature_specs"] == [{"name": contract.ITEM_EMB, "projection": "none",
                                        "embedding_dim": 128}]


def test_paper_configuration_size(tmp_path, monkeypatch):
    """QIN_MicroLens at real sizes: 31,227,909 parameters; the published run logged 31,244,293,
    whose only difference is FuxiCTR's trainable Linear(128, 128, bias=False) on the item
    vector (``type: embedding``), here the frozen vector as is."""
    model = real_size_model("QIN_MicroLens", tmp_path, monkeypatch)
    total = trainable_parameters(model)
    assert model.inputs.item_dim == 384 and model.interaction_input_dim == 1024
    assert sum(p.numel() for p in model.attention.parameters()) == 3 * 384 * 768 + 768 * 384
    assert sum(p.numel() for p in model.interaction.parameters()) == 16_801_796
    assert total == 31_227_909, total
    projected = [{"name": contract.ITEM_EMB, "projection": "linear", "projection_bias": False}]
    with_projection = trainable_parameters(
        real_size_model("QIN_MicroLens", tmp_path, monkeypatch, feature_specs=projected))
    assert with_projection == 31_244_293 == total + 128 * 128
