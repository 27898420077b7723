"""Transformer_DCN: shapes, gradients, masking, ablations, determinism, size, tracing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN
from tests.models.builders import (
    B,
    L,
    LENGTHS,
    feature_map_of,
    history_change,
    make_batch,
    predict,
    real_size_model,
    tiny_transformer_dcn,
    trainable_parameters,
)

make_model = tiny_transformer_dcn


def test_forward_shape_and_every_parameter_learns(tmp_path):
    model = make_model(tmp_path).train()
    assert model.item_encoder.output_dim == 32
    assert model.dcn_input_dim == 2 * 8 + 32 + (4 + 1) * 64
    y_pred = model(make_batch())["y_pred"]
    assert y_pred.shape == (B, 1) and ((y_pred > 0) & (y_pred < 1)).all()
    model.trainer.compute_loss(make_batch()).backward()
    no_grad = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    frozen = model.item_encoder.item_table.column(contract.ITEM_EMB)
    assert not frozen.requires_grad and all(p is not frozen for p in model.parameters())


def test_changing_history_items_changes_the_prediction(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    diff = history_change(model, batch)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all()
    assert diff[~has_history].max() == 0.0


def test_legacy_mask_ignores_history_items_of_sequences_shorter_than_max(tmp_path):
    model = make_model(tmp_path, legacy_mask=True)
    batch = make_batch()
    diff = history_change(model, batch)
    shorter = torch.tensor(LENGTHS) < L
    assert diff[shorter].max().item() == 0.0
    assert (diff[~shorter] > 0).all()   # a full history attends its last item only


@pytest.mark.parametrize("legacy_mask", [False, True])
def test_fully_padded_histories_give_finite_outputs_and_gradients(tmp_path, legacy_mask):
    model = make_model(tmp_path, legacy_mask=legacy_mask).train()
    batch = make_batch(lengths=[0] * 4 + [L] * 4)
    y_pred = model(batch)["y_pred"]
    model.trainer.compute_loss(batch).backward()
    assert torch.isfinite(y_pred).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_overfits_one_small_batch(tmp_path):
    model = make_model(tmp_path, learning_rate=3e-3, net_dropout=0.0, transformer_dropout=0.0)
    model.train()
    batch = make_batch(seed=3, lengths=[3, 5, 0, L, 8, 1, 6, 2] * 4)
    losses = []
    for _ in range(40):
        model.optimizer.zero_grad()
        loss = model.trainer.compute_loss(batch)
        loss.backward()
        model.optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.5 and losses[-1] < 0.05, losses[::10]


@pytest.mark.parametrize("switch", [
    {"use_transformer": False}, {"use_dcn": False}, {"use_multimodal": False},
    {"target_concat": False}, {"legacy_mask": True}, {"concat_max_pool": False},
    {"batch_norm": True}, {"first_k_cols": L + 3}, {"max_len": 6},
])
def test_each_ablation_switch_builds_and_runs(tmp_path, switch):
    model = make_model(tmp_path, **switch).train()
    y_pred = model(make_batch())["y_pred"]
    y_pred.sum().backward()
    assert y_pred.shape == (B, 1) and torch.isfinite(y_pred).all()


def test_ablation_switches_change_the_architecture(tmp_path):
    full = make_model(tmp_path)
    assert make_model(tmp_path, use_transformer=False).dcn_input_dim == 16 + 32 + 32
    assert make_model(tmp_path, use_multimodal=False).item_encoder.output_dim == 16
    assert make_model(tmp_path, target_concat=False).dcn_input_dim == 16 + 32 + 5 * 32
    no_dcn = make_model(tmp_path, use_dcn=False)
    assert no_dcn.cross_deep.cross_net is None and no_dcn.cross_deep.output_dim == 16
    assert full.cross_deep.output_dim == full.dcn_input_dim + 16


def test_max_len_keeps_the_most_recent_positions(tmp_path):
    model = make_model(tmp_path, max_len=6)
    batch = make_batch()
    truncated = dict(batch, **{contract.ITEM_SEQ: batch[contract.ITEM_SEQ][:, -6:]})
    torch.testing.assert_close(predict(model, batch), predict(model, truncated))
    changed_old = batch[contract.ITEM_SEQ].clone()
    changed_old[:, :4] = torch.where(changed_old[:, :4] > 0, 1, 0)
    torch.testing.assert_close(predict(model, batch),
                               predict(model, dict(batch, **{contract.ITEM_SEQ: changed_old})))


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    assert torch.equal(predict(model, batch), predict(model, batch))
    model.train()
    assert not torch.equal(model(batch)["y_pred"], model(batch)["y_pred"])


def test_item_info_is_required_when_no_item_table_is_given(tmp_path):
    with pytest.raises(UserError, match="item_info") as error:
        Transformer_DCN(feature_map_of(), verbose=0, model_root=str(tmp_path), metrics=["AUC"])
    assert "\n" not in str(error.value)


def test_item_table_is_read_from_the_item_info_path(tmp_path):
    from tests.builders import TINY, write_dataset

    raw = write_dataset(tmp_path / "ds", schema=TINY, num_rows=4)
    feature_map = feature_map_of(item_vocab=TINY.item_vocab, tag_vocab=TINY.tag_vocab,
                                 tags=TINY.num_tags_per_item, pretrain_dim=TINY.item_emb_dim)
    model = Transformer_DCN(feature_map,
                            item_info=str(tmp_path / "ds" / "item_info.parquet"), embedding_dim=4,
                            first_k_cols=2, dcn_hidden_units=[8], mlp_hidden_units=[4],
                            verbose=0, model_root=str(tmp_path), metrics=["AUC"])
    vectors = model.item_encoder.item_table.column(contract.ITEM_EMB)
    np.testing.assert_array_equal(vectors.numpy(), raw["item_info"][contract.ITEM_EMB])


def test_torch_export_of_the_forward(tmp_path):
    """TorchEasyRec habit: the forward exports, and the program generalises to another batch."""
    model = make_model(tmp_path).eval()
    names = (contract.ITEM_SEQ, contract.ITEM_ID, contract.LIKES_LEVEL, contract.VIEWS_LEVEL)
    inputs = {name: make_batch()[name] for name in names}
    other_inputs = {name: make_batch(seed=5)[name] for name in names}
    program = torch.export.export(model, (inputs,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other_inputs)["y_pred"],
                                   model(other_inputs)["y_pred"])


# --- size of the paper configuration -------------------------------------------------------

PAPER_DCN_INPUT = 2 * 64 + 256 + 16 * 512 + 512


def test_paper_configuration_has_9088_wide_dcn_input_and_268m_parameters(tmp_path, monkeypatch):
    """Transformer_DCN_MicroLens on the meta device (no memory, no init cost), real sizes."""
    model = real_size_model("Transformer_DCN_MicroLens", tmp_path, monkeypatch)
    assert model.dcn_input_dim == PAPER_DCN_INPUT == 9088
    cross = sum(p.numel() for p in model.cross_deep.cross_net.parameters())
    assert cross == 3 * (9088 * 9088 + 9088)
    total = trainable_parameters(model)
    assert 267.5e6 < total < 268.5e6, total      # 267,882,497 with these sizes
