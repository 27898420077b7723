"""Builders shared by the model tests: a tiny in-memory MicroLens layout, its batches, tiny
models on it, and any ``<Model>_MicroLens`` expid built at the real sizes on the meta device.

Tiny sizes: 49 items (ids 1..49, 0 is padding), 3 tags per item from a vocabulary of 20, a
16-d frozen item vector, histories of at most ``L = 10`` items, batches of ``B = 8`` rows.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.feature_map import MMCTRFeatureMap
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.models.registry import get_model_class
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN
from fuxictr_mmctr.pipeline.experiment import load_params

NUM_ITEMS, TAGS, TAG_VOCAB, PRETRAIN, L, B = 49, 3, 20, 16, 10, 8
#: History lengths of the test batch: short, single, empty and full histories.
LENGTHS = [4, 1, 0, L, 7, 2, 0, L]
#: The repository's config/ folder, where the ``<Model>_MicroLens`` expids are.
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")


# --- the tiny MicroLens layout and its batches ---------------------------------------------

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
    """A random item table of ``num_rows`` rows (row 0 all zeros): ``tags`` tag ids per item
    (the first always padding) and a ``pretrain_dim``-wide float vector."""
    rng = np.random.default_rng(seed)
    tag_ids = rng.integers(1, TAG_VOCAB, (num_rows, tags))
    tag_ids[:, 0] = 0
    vectors = rng.normal(size=(num_rows, pretrain_dim)).astype(np.float32)
    tag_ids[0], vectors[0] = 0, 0
    return ItemTable({contract.ITEM_TAGS: tag_ids, contract.ITEM_EMB: vectors})


def make_batch(seed=0, lengths=LENGTHS):
    """One row per entry of ``lengths``: a left-padded history of ``L`` items with that many
    real items, side features, a target item and a label."""
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
    """The model's ``y_pred`` in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return model(batch)["y_pred"]


def history_change(model, batch, seed=1):
    """``|change|`` of each row's prediction, ``(rows, 1)``, when its real history items are
    replaced (:func:`with_history_items_replaced`)."""
    return (predict(model, batch) - predict(model, with_history_items_replaced(batch, seed))).abs()


# --- tiny models ---------------------------------------------------------------------------

def tiny_model(model_class, tmp_path, **hyper):
    """``model_class`` on the tiny layout and item table (item width 8 + 8 + 16 = 32): seeded,
    embedding_dim 8, N(0, 0.1) embeddings, Adam, binary cross-entropy; ``hyper`` on top."""
    torch.manual_seed(0)
    params = dict(embedding_dim=8, embedding_initializer="partial(nn.init.normal_, std=0.1)",
                  verbose=0, model_root=str(tmp_path), metrics=["AUC", "logloss"],
                  optimizer="adam", loss="binary_crossentropy")
    params.update(hyper)
    return model_class(feature_map_of(), item_table=item_table_of(), **params)


def tiny_transformer_dcn(tmp_path, **hyper):
    """A tiny Transformer_DCN (embedding_dim 8 -> item width 8 + 8 + 16 = 32): 2 layers of 1
    head, FFN 16, k = 4, 2 cross layers, DCN MLP [32, 16], head MLP [16, 8], dropouts 0.2."""
    return tiny_model(Transformer_DCN, tmp_path, **{
        "transformer_layers": 2, "num_heads": 1, "dim_feedforward": 16,
        "transformer_dropout": 0.2, "first_k_cols": 4, "dcn_cross_layers": 2,
        "dcn_hidden_units": [32, 16], "mlp_hidden_units": [16, 8], "net_dropout": 0.2, **hyper})


# --- real sizes ----------------------------------------------------------------------------

#: Trainable input parameters of the DIN and DIEN expids at the real sizes: item_id 91,718 x 64,
#: tags 11,740 x 64, their feature_specs' bias-free Linear(128, 128) of the item vector,
#: likes/views 2 x 11 x 64.
REAL_INPUTS = (contract.NUM_ITEMS + 1) * 64 + contract.TAG_VOCAB * 64 + 128 * 128 + 2 * 11 * 64


def real_size_model(expid, tmp_path, monkeypatch, **overrides):
    """``expid``'s model (its config/ parameters, then ``overrides``) at the real MicroLens
    sizes: 91,717 items, 5 tags per item from 11,740, the 128-d frozen item vector with the
    expid's ``feature_specs`` applied. Built on the meta device (no memory, no init cost) over
    a 2-row item table; ``model_to_device`` is patched out (meta tensors cannot be copied)."""
    params = {**load_params(CONFIG_DIR, expid), **overrides}
    model_class = get_model_class(params["model"])
    feature_map = feature_map_of(
        item_vocab=contract.NUM_ITEMS + 1, tag_vocab=contract.TAG_VOCAB,
        tags=contract.NUM_TAGS_PER_ITEM, pretrain_dim=contract.ITEM_EMB_DIM)
    if params.get("feature_specs"):
        feature_map.update_feature_specs(params["feature_specs"])
    table = ItemTable({contract.ITEM_TAGS: np.zeros((2, contract.NUM_TAGS_PER_ITEM), np.int64),
                       contract.ITEM_EMB: np.zeros((2, contract.ITEM_EMB_DIM), np.float32)})
    monkeypatch.setattr(model_class, "model_to_device", lambda self: None)
    with torch.device("meta"):
        return model_class(feature_map, **{**params, "item_table": table, "verbose": 0,
                                           "model_root": str(tmp_path)})


def trainable_parameters(model):
    """How many trainable parameters ``model`` has."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
