"""DIEN: exact reading of left-padded histories, the auxiliary loss, the real configuration's size."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.models.dien import DIEN
from tests.models.builders import (
    L,
    LENGTHS,
    NUM_ITEMS,
    REAL_INPUTS,
    history_change,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
)

#: A tiny DIEN (embedding_dim 8 -> item and interest width 8 + 8 + 16 = 32).
make_model = functools.partial(tiny_model, DIEN, dnn_hidden_units=[32, 16], net_dropout=0.0,
                               batch_norm=True, aux_hidden_units=[16, 8])


def right_aligned(batch):
    """The same histories with their real items first and the padding after them."""
    history = batch[contract.ITEM_SEQ]
    order = torch.argsort((history == 0).to(torch.int8), dim=1, stable=True)
    moved = torch.gather(history, 1, order)
    assert not torch.equal(moved, history)
    return dict(batch, **{contract.ITEM_SEQ: moved})


def seeded(model, batch, seed=7):
    """The model's output with a fixed random stream (negatives of the auxiliary loss)."""
    torch.manual_seed(seed)
    return model(batch)


def test_left_padded_and_right_aligned_histories_give_the_same_output(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    torch.testing.assert_close(predict(model, right_aligned(batch)), predict(model, batch))
    # Padding in the middle of a history too: the recurrences read the mask, not positions.
    gapped = batch[contract.ITEM_SEQ].clone()
    gapped = torch.cat([gapped[:, :5], torch.zeros_like(gapped[:, :3]), gapped[:, 5:]], dim=1)
    torch.testing.assert_close(predict(model, dict(batch, **{contract.ITEM_SEQ: gapped})),
                               predict(model, batch))


def test_changing_history_items_changes_the_prediction(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    diff = history_change(model, batch)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all() and diff[~has_history].max() == 0.0


def test_dnn_reads_side_target_and_final_interest(tmp_path):
    model = make_model(tmp_path).eval()
    batch = make_batch()
    assert model.interest_dim == 32 and model.dnn_input_dim == 16 + 32 + 32
    with torch.no_grad():
        inputs = model.inputs(batch)
        states, _ = model.extractor(inputs.history_emb, inputs.history_mask)
        weights = model.attention(inputs.target_emb, states, inputs.history_mask)
        _, interest = model.evolution(states, weights, inputs.history_mask)
        expected = model.head(torch.cat([inputs.side_emb, inputs.target_emb, interest], -1))
    torch.testing.assert_close(model(batch)["logit"], expected)
    assert (interest[torch.tensor(LENGTHS) == 0] == 0).all()
    assert make_model(tmp_path, interest_dim=12).dnn_input_dim == 16 + 32 + 12


def test_aux_loss_is_returned_in_training_only_and_is_finite(tmp_path):
    model = make_model(tmp_path, use_aux_loss=True, aux_loss_alpha=0.5).train()
    output = seeded(model, make_batch())
    assert output["aux_loss"].shape == () and torch.isfinite(output["aux_loss"])
    assert output["aux_loss"] > 0
    assert "aux_loss" not in model.eval()(make_batch())
    assert "aux_loss" not in make_model(tmp_path).train()(make_batch())   # off by default


def test_aux_loss_is_alpha_times_the_next_item_loss_and_the_trainer_adds_it(tmp_path):
    model = make_model(tmp_path, use_aux_loss=True, aux_loss_alpha=0.5).train()
    batch = make_batch()
    output = seeded(model, batch)
    torch.manual_seed(7)
    inputs = model.inputs(batch)
    states, _ = model.extractor(inputs.history_emb, inputs.history_mask)
    unscaled = model.auxiliary_loss(states, inputs)
    torch.testing.assert_close(output["aux_loss"], 0.5 * unscaled)
    bce = F.binary_cross_entropy_with_logits(output["logit"].reshape(-1),
                                             batch[contract.LABEL].float())
    torch.manual_seed(7)
    torch.testing.assert_close(model.trainer.compute_loss(batch),
                               bce + output["aux_loss"] + model.regularization_loss())


def test_aux_loss_gradient_flows_into_the_interest_extractor(tmp_path):
    model = make_model(tmp_path, use_aux_loss=True).train()
    seeded(model, make_batch())["aux_loss"].backward()
    for name, parameter in model.extractor.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad.abs().sum() > 0 for p in model.aux_scorer.parameters())
    assert all(p.grad is None for p in model.evolution.parameters())


def test_aux_loss_changes_when_a_history_item_changes(tmp_path):
    model = make_model(tmp_path, use_aux_loss=True).train()
    batch = make_batch()
    before = seeded(model, batch)["aux_loss"]
    history = batch[contract.ITEM_SEQ].clone()
    row = LENGTHS.index(L)
    history[row, -1] = history[row, -1] % NUM_ITEMS + 1
    after = seeded(model, dict(batch, **{contract.ITEM_SEQ: history}))["aux_loss"]
    assert torch.isfinite(after) and after != before
    # Only histories of one item or none: no pair of consecutive real items, no loss.
    short = make_batch(lengths=[0, 1, 1, 0])
    assert seeded(model, short)["aux_loss"] == 0


# --- size of the DIEN_MicroLens configuration ----------------------------------------------

def test_real_configuration_has_256_wide_interests_and_8_8m_parameters(tmp_path, monkeypatch):
    model = real_size_model("DIEN_MicroLens", tmp_path, monkeypatch)
    assert model.inputs.item_dim == model.interest_dim == 256
    assert model.dnn_input_dim == 640 and model.aux_scorer is None
    gru = 3 * 256 * (256 + 256) + 2 * 3 * 256
    assert sum(p.numel() for p in model.extractor.parameters()) == gru == 394_752
    assert sum(p.numel() for p in model.evolution.parameters()) == gru
    bilinear = 256 * 256
    dnn = ((640 * 1024 + 1024 + 2 * 1024) + (1024 * 512 + 512 + 2 * 512)
           + (512 * 256 + 256 + 2 * 256) + (256 + 1))
    assert trainable_parameters(model) == REAL_INPUTS + 2 * gru + bilinear + dnn == 8_810_497
