"""DeepFM: its fields, FM + MLP, no dependence on the history at all, size."""
from __future__ import annotations

import functools

import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.layers.fm import FactorizationMachine
from fuxictr_mmctr.models.deepfm import DeepFM
from tests.models.builders import (
    B,
    NUM_ITEMS,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
    with_history_items_replaced,
)

#: A tiny DeepFM: d = 8, fields likes, views, item id, tags, vector (16 -> 8).
make_model = functools.partial(tiny_model, DeepFM, hidden_units=[32, 16])


def test_fields_are_the_side_features_and_the_target_item_features(tmp_path):
    model = make_model(tmp_path)
    inputs = model.inputs(make_batch())
    assert inputs.side_fields.shape == (B, 2, 8) and inputs.target_fields.shape == (B, 3, 8)
    assert model.num_fields == 5 and model.fm.weight.shape == (5, 8)
    assert list(model.inputs.field_projections) == [contract.ITEM_EMB]
    assert make_model(tmp_path, use_multimodal=False).num_fields == 4


def test_logit_is_the_fm_plus_the_mlp_over_the_flattened_fields(tmp_path):
    model = make_model(tmp_path).eval()
    batch = make_batch()
    with torch.no_grad():
        inputs = model.inputs(batch)
        fields = torch.cat([inputs.side_fields, inputs.target_fields], dim=1)
        expected = (model.fm.first_order(fields) + FactorizationMachine.second_order(fields)
                    + model.dnn(fields.reshape(B, -1)))
        torch.testing.assert_close(model(batch)["logit"], expected)


def test_every_parameter_learns(tmp_path):
    model = make_model(tmp_path).train()
    model.trainer.compute_loss(make_batch()).backward()
    no_grad = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_the_output_does_not_depend_on_the_history_at_all(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    before = predict(model, batch)
    history = batch[contract.ITEM_SEQ]
    variants = [
        with_history_items_replaced(batch, 1)[contract.ITEM_SEQ],
        torch.zeros_like(history),                                        # empty histories
        torch.randint(1, NUM_ITEMS + 1, history.shape),                   # full histories
        torch.cat([torch.zeros_like(history[:, :3]), history], dim=1),    # more padding
        history[:, -2:],                                                  # shorter
    ]
    for seq in variants:
        assert torch.equal(predict(model, dict(batch, **{contract.ITEM_SEQ: seq})), before)


def test_the_output_depends_on_the_target_and_side_features(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    before = predict(model, batch)
    for name in (contract.ITEM_ID, contract.LIKES_LEVEL, contract.VIEWS_LEVEL):
        changed = dict(batch, **{name: batch[name] % 10 + 1})
        assert not torch.equal(predict(model, changed), before), name


# --- size of the DeepFM_MicroLens configuration --------------------------------------------

def test_real_configuration_parameter_count(tmp_path, monkeypatch):
    """DeepFM_MicroLens built on the meta device with the real vocabulary sizes."""
    model = real_size_model("DeepFM_MicroLens", tmp_path, monkeypatch)
    assert model.num_fields == 5
    embeddings = (contract.NUM_ITEMS + 1) * 64 + contract.TAG_VOCAB * 64 + 2 * 11 * 64
    vector_projection = 128 * 64
    fm = 5 * 64 + 1
    mlp = (5 * 64 * 300 + 300) + 2 * (300 * 300 + 300) + (300 + 1)
    total = trainable_parameters(model)
    assert total == embeddings + vector_projection + fm + mlp == 6_908_434
