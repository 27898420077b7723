"""DIN: DIN's unnormalised attention, the softmax option, the challenge configuration's size."""
from __future__ import annotations

import functools

import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.models.din import DIN
from tests.models.builders import (
    B,
    L,
    LENGTHS,
    REAL_INPUTS,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
)

#: A tiny DIN (embedding_dim 8 -> item width 8 + 8 + 16 = 32, DNN input 16 + 2 * 32).
make_model = functools.partial(tiny_model, DIN, attention_hidden_units=[16, 8],
                               attention_dropout=0.1, dnn_hidden_units=[32, 16],
                               net_dropout=0.1, batch_norm=True)


def attention_of(model, batch):
    """``(inputs, weights (B, L), pooled (B, D))`` of the model in eval mode."""
    model.eval()
    with torch.no_grad():
        inputs = model.inputs(batch)
        args = (inputs.target_emb, inputs.history_emb, inputs.history_mask)
        return inputs, model.attention.attention_weights(*args), model.attention(*args)


def test_unnormalised_weights_are_scores_times_mask_and_pool_by_hand(tmp_path):
    model = make_model(tmp_path)
    assert model.attention.normalization == "none"
    inputs, weights, pooled = attention_of(model, make_batch())
    with torch.no_grad():
        scores = model.attention.scores(inputs.target_emb, inputs.history_emb)
        for b in range(B):
            for i in range(L):
                t, h = inputs.target_emb[b], inputs.history_emb[b, i]
                mlp = model.attention.scorer(torch.cat([t, h, t - h, t * h]).unsqueeze(0))
                torch.testing.assert_close(scores[b, i], mlp.squeeze())
    torch.testing.assert_close(weights, scores * inputs.history_mask)
    assert (weights[~inputs.history_mask] == 0).all()
    by_hand = torch.stack([sum(weights[b, i] * inputs.history_emb[b, i] for i in range(L))
                           for b in range(B)])
    torch.testing.assert_close(pooled, by_hand)
    assert (pooled[torch.tensor(LENGTHS) == 0] == 0).all()
    # The logit is the DNN of [side || target || pooled].
    with torch.no_grad():
        expected = model.head(torch.cat([inputs.side_emb, inputs.target_emb, by_hand], dim=-1))
    torch.testing.assert_close(model(make_batch())["logit"], expected)


def test_softmax_weights_sum_to_one_over_real_positions_and_are_zero_at_padding(tmp_path):
    model = make_model(tmp_path, attention_normalization="softmax")
    inputs, weights, pooled = attention_of(model, make_batch())
    mask = inputs.history_mask
    assert (weights[~mask] == 0).all() and (weights >= 0).all()
    has_history = torch.tensor(LENGTHS) > 0
    torch.testing.assert_close(weights[has_history].sum(-1),
                               torch.ones(int(has_history.sum())))
    assert (weights[~has_history] == 0).all() and torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled, (weights.unsqueeze(-1) * inputs.history_emb).sum(1))


def test_the_two_normalisations_give_different_outputs(tmp_path):
    unnormalised = make_model(tmp_path)
    softmax = make_model(tmp_path, attention_normalization="softmax")
    softmax.load_state_dict(unnormalised.state_dict())
    batch = make_batch()
    diff = (predict(unnormalised, batch) - predict(softmax, batch)).abs().reshape(-1)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all()
    assert diff[~has_history].max() == 0      # no history: both pool to zeros


def test_dnn_has_batch_norm_and_dropout_and_every_parameter_learns(tmp_path):
    model = make_model(tmp_path).train()
    layers = [type(m).__name__ for m in model.head.modules()]
    assert layers.count("BatchNorm1d") == 2 and layers.count("Dropout") == 2
    assert model.dnn_input_dim == 2 * 8 + 2 * 32
    model.trainer.compute_loss(make_batch()).backward()
    no_grad = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_unknown_attention_normalization_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="normalization") as error:
        make_model(tmp_path, attention_normalization="sum")
    assert "\n" not in str(error.value)


# --- size of the DIN_MicroLens configuration (the challenge's baseline) ----------------------

def test_challenge_configuration_is_256_wide_items_a_640_wide_dnn_and_8_6m_parameters(
        tmp_path, monkeypatch):
    model = real_size_model("DIN_MicroLens", tmp_path, monkeypatch)
    projection = model.item_encoder.projections[contract.ITEM_EMB]
    assert projection.weight.shape == (128, 128) and projection.bias is None
    assert model.inputs.item_dim == 256 and model.dnn_input_dim == 640
    attention = (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    dnn = ((640 * 1024 + 1024 + 2 * 1024) + (1024 * 512 + 512 + 2 * 512)
           + (512 * 256 + 256 + 2 * 256) + (256 + 1))
    assert sum(p.numel() for p in model.attention.parameters()) == attention == 656_385
    assert sum(p.numel() for p in model.head.parameters()) == dnn == 1_316_353
    assert trainable_parameters(model) == REAL_INPUTS + attention + dnn == 8_611_842
