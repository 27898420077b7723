"""Transformer_DCN: shapes, gradients, masking, ablations, determinism, size, tracing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.feature_map import MMCTRFeatureMap
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN

NUM_ITEMS, TAGS, TAG_VOCAB, PRETRAIN, L, B = 49, 3, 20, 16, 10, 8
#: History lengths of the test batch: short, single, empty and full histories.
LENGTHS = [4, 1, 0, L, 7, 2, 0, L]


def feature_map_of(item_vocab=NUM_ITEMS + 1, tag_vocab=TAG_VOCAB, tags=TAGS,
                   pretrain_dim=PRETRAIN, embedding_dim=None):
    """The MicroLens feature layout, built in memory (no files)."""
    feature_map = MMCTRFeatureMap("tiny_model", "/nonexistent")
    feature_map.features = {
        contract.USER_ID: {"type": "meta"},
        contract.ITEM_SEQ: {"type": "meta", "share_embedding": contract.ITEM_ID,
                            "padding_idx": 0, "max_len": L},
        contract.LIKES_LEVEL: {"source": "", "type": "categorical", "vocab_size": 11},
        contract.VIEWS_LEVEL: {"source": "", "type": "categorical", "vocab_size": 11},
        contract.ITEM_ID: {"source": "item", "type": "categorical", "vocab_size": item_vocab,
                           "padding_idx": 0},
        contract.ITEM_TAGS: {"source": "item", "type": "sequence", "vocab_size": tag_vocab,
                             "max_len": tags, "padding_idx": 0},
        contract.ITEM_EMB: {"source": "item", "type": "frozen_embedding",
                            "pretrain_dim": pretrain_dim, "projection": "none",
                            "embedding_dim": embedding_dim or pretrain_dim, "finetune": False},
    }
    feature_map.labels = [contract.LABEL]
    return feature_map


def item_table_of(num_rows=NUM_ITEMS + 1, tags=TAGS, pretrain_dim=PRETRAIN, seed=0):
    rng = np.random.default_rng(seed)
    tag_ids = rng.integers(1, TAG_VOCAB, (num_rows, tags))
    tag_ids[:, 0] = 0
    vectors = rng.normal(size=(num_rows, pretrain_dim)).astype(np.float32)
    tag_ids[0], vectors[0] = 0, 0
    return ItemTable({contract.ITEM_TAGS: tag_ids, contract.ITEM_EMB: vectors})


def make_model(tmp_path, **hyper):
    """A tiny Transformer_DCN (embedding_dim 8 -> item width 8 + 8 + 16 = 32)."""
    torch.manual_seed(0)
    params = dict(embedding_dim=8, transformer_layers=2, num_heads=1, dim_feedforward=16,
                  transformer_dropout=0.2, first_k_cols=4, dcn_cross_layers=2,
                  dcn_hidden_units=[32, 16], mlp_hidden_units=[16, 8], net_dropout=0.2,
                  embedding_initializer="partial(nn.init.normal_, std=0.1)")
    params.update(hyper)
    return Transformer_DCN(feature_map_of(), item_table=item_table_of(), verbose=0,
                           model_root=str(tmp_path), metrics=["AUC", "logloss"],
                           optimizer="adam", loss="binary_crossentropy", **params)


def make_batch(seed=0, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    rows = len(lengths)
    history = rng.integers(1, NUM_ITEMS + 1, (rows, L))
    history[np.arange(L)[None, :] < (L - np.asarray(lengths))[:, None]] = 0
    return {
        contract.USER_ID: torch.arange(rows),
        contract.ITEM_SEQ: torch.as_tensor(history),
        contract.LIKES_LEVEL: torch.as_tensor(rng.integers(0, 11, rows)),
        contract.VIEWS_LEVEL: torch.as_tensor(rng.integers(0, 11, rows)),
        contract.ITEM_ID: torch.as_tensor(rng.integers(1, NUM_ITEMS + 1, rows)),
        contract.LABEL: torch.as_tensor(rng.integers(0, 2, rows).astype(np.float32)),
    }


def with_history_items_replaced(batch, seed):
    """Same lengths and padding, different real history items."""
    other = dict(batch)
    history = batch[contract.ITEM_SEQ]
    fresh = make_batch(seed)[contract.ITEM_SEQ]
    fresh = torch.where(history > 0, (history + fresh) % NUM_ITEMS + 1, history)
    assert torch.equal(fresh > 0, history > 0) and not torch.equal(fresh, history)
    other[contract.ITEM_SEQ] = fresh
    return other


def predict(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch)["y_pred"]


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
    diff = (predict(model, batch) - predict(model, with_history_items_replaced(batch, 1))).abs()
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all()
    assert diff[~has_history].max() == 0.0


def test_legacy_mask_ignores_history_items_of_sequences_shorter_than_max(tmp_path):
    model = make_model(tmp_path, legacy_mask=True)
    batch = make_batch()
    diff = (predict(model, batch) - predict(model, with_history_items_replaced(batch, 1))).abs()
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
    """Built on the meta device (no memory, no init cost) with the real vocabulary sizes."""
    feature_map = feature_map_of(
        item_vocab=contract.NUM_ITEMS + 1, tag_vocab=contract.TAG_VOCAB,
        tags=contract.NUM_TAGS_PER_ITEM, pretrain_dim=contract.ITEM_EMB_DIM)
    table = ItemTable({contract.ITEM_TAGS: np.zeros((2, contract.NUM_TAGS_PER_ITEM), np.int64),
                       contract.ITEM_EMB: np.zeros((2, contract.ITEM_EMB_DIM), np.float32)})
    # Meta tensors cannot be copied to the CPU; the size does not depend on the device.
    monkeypatch.setattr(Transformer_DCN, "model_to_device", lambda self: None)
    with torch.device("meta"):
        model = Transformer_DCN(feature_map, item_table=table, verbose=0,
                                model_root=str(tmp_path), metrics=["AUC"])
    assert model.dcn_input_dim == PAPER_DCN_INPUT == 9088
    cross = sum(p.numel() for p in model.cross_deep.cross_net.parameters())
    assert cross == 3 * (9088 * 9088 + 9088)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 267.5e6 < total < 268.5e6, total      # 267,882,497 with these sizes
