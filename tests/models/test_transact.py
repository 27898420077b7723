"""TransAct: Transformer_DCN's arch with k = 1, one layer, FFN 512; the real expid's size."""
from __future__ import annotations

import functools

import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.models.registry import get_model_class
from fuxictr_mmctr.models.transact import TransAct
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN
from fuxictr_mmctr.pipeline.experiment import load_params
from tests.models.builders import (
    B,
    CONFIG_DIR,
    L,
    LENGTHS,
    NUM_ITEMS,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
)

D = 32                 # item width 8 + 8 + 16; tokens [h || t] are 2D wide

make_model = functools.partial(tiny_model, TransAct, dim_feedforward=16,
                               dcn_hidden_units=[32, 16])


def test_is_a_registered_transformer_dcn_with_transacts_defaults(tmp_path):
    assert get_model_class("TransAct") is TransAct and issubclass(TransAct, Transformer_DCN)
    model = tiny_model(TransAct, tmp_path)      # TransAct's own defaults, embedding_dim 8
    arch = model.sequence_arch
    assert arch.first_k_cols == 1 and arch.concat_max_pool and arch.token_dim == 2 * D
    assert len(arch.encoder.layers) == 1
    layer = arch.encoder.layers[0]
    assert layer.self_attn.num_heads == 1 and layer.linear1.out_features == 512
    assert model.dcn_input_dim == 16 + D + 2 * (2 * D)       # side + item + (k + 1) tokens
    assert len(model.cross_deep.cross_net.cross_layers) == 3
    assert model.cross_deep.output_dim == model.dcn_input_dim + 256
    # No hidden layer in the head: the cross and deep outputs go straight to the logit unit.
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(model.dcn_input_dim + 256, 1)]


def test_the_most_recent_history_item_changes_the_output(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    replaced = batch[contract.ITEM_SEQ].clone()
    last = replaced[:, -1]
    replaced[:, -1] = torch.where(last > 0, last % NUM_ITEMS + 1, last)
    diff = (predict(model, dict(batch, **{contract.ITEM_SEQ: replaced}))
            - predict(model, batch)).abs().reshape(-1)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all() and diff[~has_history].max() == 0
    assert predict(model, batch).shape == (B, 1)


def test_transformer_dcn_options_pass_through(tmp_path):
    assert {"use_dcn", "legacy_mask", "target_concat"} <= set(TransAct.build_parameters())
    model = make_model(tmp_path, legacy_mask=True, use_dcn=False, first_k_cols=3)
    assert model.sequence_arch.legacy_mask and model.cross_deep.cross_net is None
    assert model.dcn_input_dim == 16 + D + 4 * (2 * D)
    assert model.sequence_arch.output_dim == 4 * 2 * D and L >= 3


def test_real_expid_size(tmp_path, monkeypatch):
    """TransAct_MicroLens (the 1st-place team's TransAct settings) at real sizes: 125,332,481."""
    params = load_params(CONFIG_DIR, "TransAct_MicroLens")
    assert (params["first_k_cols"], params["transformer_layers"], params["dim_feedforward"]) == (
        10, 2, 256)
    model = real_size_model("TransAct_MicroLens", tmp_path, monkeypatch)
    assert model.dcn_input_dim == 128 + 256 + 11 * 512 == 6016
    cross = sum(p.numel() for p in model.cross_deep.cross_net.parameters())
    assert cross == 3 * (6016 * 6016 + 6016)
    total = trainable_parameters(model)
    assert total == 125_332_481, total
