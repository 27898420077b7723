"""The model contract, checked on every registered model with its ``<Model>_MicroLens_tiny`` expid.

A model is a ``build``/``score`` pair on the shared input stage: it must give one logit per row,
train every parameter, ignore padding, read its history, stay finite on empty histories and
export with ``torch.export``.
"""
from __future__ import annotations

import os

import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.history_plan import with_plan, without_plan
from fuxictr_mmctr.models.registry import registered_models
from fuxictr_mmctr.pipeline.experiment import build_model, load_params, make_loader, prepare

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
ROWS = 64
#: Models that read no history at all (their output must not change with it either way).
HISTORY_FREE = {"DeepFM"}
#: Models whose attention gives an item exactly zero weight when its score is <= 0 (QIN's ReLU
#: instead of a softmax, as published): an item can be read and still not count, so here the
#: check is that the history counts somewhere; tests/models/test_qin.py checks the exact rule
#: (the output changes if and only if the replaced item has a positive weight).
ZERO_WEIGHT_ATTENTION = {"QIN"}


def with_history(batch: dict, item_seq: torch.Tensor) -> dict:
    """``batch`` with another ``item_seq`` and the history plan made for it."""
    return with_plan({**without_plan(batch), contract.ITEM_SEQ: item_seq})


@pytest.fixture(scope="module", params=registered_models())
def built(request, tiny_dataset, tmp_path_factory):
    """``(model, batch)``: the model of its tiny expid on the tiny data, and 64 valid rows."""
    name = request.param
    params = load_params(CONFIG_DIR, f"{name}_MicroLens_tiny")
    assert params["model"] == name
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        params[key] = os.path.join(tiny_dataset, os.path.basename(params[key]))
    params["data_root"] = str(tmp_path_factory.mktemp("feature_maps"))
    params["model_root"] = str(tmp_path_factory.mktemp("checkpoints"))
    params["verbose"] = 0
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    loader = make_loader(params, catalogue, params["valid_data"], train=False,
                         device=model.device)
    loader.batch_size = ROWS
    batch = next(iter(loader))
    return model, batch


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch)["logit"]


def test_one_logit_per_row_and_its_probability(built):
    model, batch = built
    output = model.eval()(batch)
    assert output["logit"].shape == (ROWS, 1) and output["logit"].dtype == torch.float32
    torch.testing.assert_close(output["y_pred"], torch.sigmoid(output["logit"]))


def test_every_parameter_receives_a_gradient(built):
    model, batch = built
    model.train()
    model.zero_grad(set_to_none=True)
    model.trainer.compute_loss(batch).backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    model.zero_grad(set_to_none=True)


def test_padding_does_not_change_the_output(built):
    model, batch = built
    before = logits(model, batch)
    # More padding on the left of every history...
    history = batch[contract.ITEM_SEQ]
    longer = torch.cat([torch.zeros_like(history[:, :7]), history], dim=1)
    max_len, model.inputs.max_len = model.inputs.max_len, None
    try:
        padded = logits(model, with_history(batch, longer))
    finally:
        model.inputs.max_len = max_len
    torch.testing.assert_close(padded, before, rtol=1e-5, atol=1e-6)
    # ...and whatever the item table holds in its padding row.
    table = model.inputs.item_encoder.item_table
    saved = {name: table.column(name)[0].clone() for name in table.names}
    try:
        for name in table.names:
            column = table.column(name)
            column[0] = 3 if not column.is_floating_point() else 5.0
        changed = logits(model, batch)
    finally:
        for name, row in saved.items():
            table.column(name)[0] = row
    torch.testing.assert_close(changed, before, rtol=1e-5, atol=1e-6)


def test_a_real_history_item_changes_the_output(built):
    model, batch = built
    history = batch[contract.ITEM_SEQ][:, -(model.inputs.max_len or 10**9):]
    last = history[:, -1]
    rows = last > 0
    assert rows.sum() >= ROWS // 2
    replaced = batch[contract.ITEM_SEQ].clone()
    num_items = model.inputs.item_encoder.num_items
    replaced[:, -1] = torch.where(rows, last % (num_items - 1) + 1, last)
    diff = (logits(model, with_history(batch, replaced))
            - logits(model, batch)).abs().reshape(-1)
    if type(model).__name__ in HISTORY_FREE:
        assert diff.max() == 0
    elif type(model).__name__ in ZERO_WEIGHT_ATTENTION:
        assert (diff[rows] > 0).any() and diff[~rows].max() == 0
    else:
        assert (diff[rows] > 0).all(), f"{int((diff[rows] == 0).sum())} rows ignore their history"
        assert diff[~rows].max() == 0


def test_empty_histories_give_finite_outputs_and_gradients(built):
    model, batch = built
    empty = with_history(batch, torch.zeros_like(batch[contract.ITEM_SEQ]))
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model.trainer.compute_loss(empty)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    assert torch.isfinite(logits(model, empty)).all()


def test_forward_exports_with_torch_export(built):
    model, batch = built
    model.eval()
    inputs = {name: batch[name] for name in (contract.ITEM_SEQ, contract.ITEM_ID,
                                             contract.LIKES_LEVEL, contract.VIEWS_LEVEL)}
    program = torch.export.export(model, (inputs,))
    other = {name: tensor.roll(5, dims=0) for name, tensor in inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other)["logit"], model(other)["logit"])
