"""BST: the token sequence (target last, positions from the right, concatenated), masking, size."""
from __future__ import annotations

import functools

import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.positional import sinusoidal_table
from fuxictr_mmctr.models.bst import BST
from tests.models.builders import (
    B,
    L,
    LENGTHS,
    history_change,
    make_batch,
    predict,
    real_size_model,
    tiny_model,
    trainable_parameters,
)

D, P = 32, 8          # item width 8 + 8 + 16, position width

make_model = functools.partial(tiny_model, BST, max_len=L, num_heads=2, position_dim=P,
                               dnn_hidden_units=[16, 8])


def test_the_target_is_the_last_token_and_positions_count_from_the_right(tmp_path):
    model = make_model(tmp_path).eval()
    batch = make_batch()
    inputs = model.inputs(batch)
    tokens, real = model.tokens(inputs)
    assert tokens.shape == (B, L + 1, D + P) and model.token_dim == D + P
    torch.testing.assert_close(tokens[:, L, :D], inputs.target_emb)
    torch.testing.assert_close(tokens[:, :L, :D], inputs.history_emb)
    for j in range(L + 1):       # target: position 0, most recent history item: 1, ...
        torch.testing.assert_close(tokens[:, j, D:], model.positions.weight[L - j].expand(B, P))
    assert real[:, L].all() and torch.equal(real[:, :L], inputs.history_mask)


def test_the_encoder_sees_those_tokens_with_padding_keys_ignored(tmp_path):
    model = make_model(tmp_path).eval()
    batch = make_batch()
    seen = {}
    hook = model.encoder.register_forward_hook(
        lambda module, args, kwargs, out: seen.update(tokens=args[0],
                                                      mask=kwargs["src_key_padding_mask"]),
        with_kwargs=True)
    try:
        with torch.no_grad():
            model(batch)
    finally:
        hook.remove()
    tokens, real = model.tokens(model.inputs(batch))
    torch.testing.assert_close(seen["tokens"], tokens)
    assert torch.equal(seen["mask"], ~real)         # True = ignored: padding only


def test_positional_embedding_is_concatenated_learnable_and_sinusoidal_at_init(tmp_path):
    model = make_model(tmp_path)
    assert model.positions.mode == "concat" and model.positions.weight.requires_grad
    torch.testing.assert_close(model.positions.weight.detach(), sinusoidal_table(L + 1, P))
    assert model.encoder.layers[0].self_attn.embed_dim == D + P
    assert model.dnn_input_dim == 16 + D + (D + P)


def test_extra_left_padding_and_truncation_leave_the_output_unchanged(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    before = predict(model, batch)
    longer = torch.cat([torch.zeros_like(batch[contract.ITEM_SEQ][:, :5]),
                        batch[contract.ITEM_SEQ]], dim=1)
    model.inputs.max_len = None                   # 16 tokens for an 11-row position table
    torch.testing.assert_close(predict(model, dict(batch, **{contract.ITEM_SEQ: longer})),
                               before)


def test_history_items_matter_and_empty_histories_stay_finite(tmp_path):
    model = make_model(tmp_path)
    batch = make_batch()
    diff = history_change(model, batch)
    has_history = torch.tensor(LENGTHS) > 0
    assert (diff[has_history] > 0).all() and diff[~has_history].max() == 0
    model.train()
    empty = dict(batch, **{contract.ITEM_SEQ: torch.zeros_like(batch[contract.ITEM_SEQ])})
    model.trainer.compute_loss(empty).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_options_and_one_line_errors(tmp_path):
    model = make_model(tmp_path, dim_feedforward=None, transformer_layers=2,
                       ffn_activation="gelu", batch_norm=True, net_dropout=0.1)
    assert model.encoder.layers[0].linear1.out_features == D + P
    assert len(model.encoder.layers) == 2
    for bad, match in [({"num_heads": 3}, "num_heads"), ({"max_len": None}, "max_len"),
                       ({"ffn_activation": "tanh"}, "ffn_activation")]:
        with pytest.raises(UserError, match=match) as error:
            make_model(tmp_path, **bad)
        assert "\n" not in str(error.value)


def test_paper_configuration_size(tmp_path, monkeypatch):
    """BST_MicroLens at real sizes, on the meta device: 8,622,785 parameters."""
    model = real_size_model("BST_MicroLens", tmp_path, monkeypatch)
    assert model.token_dim == 256 + 64 and model.dnn_input_dim == 128 + 256 + 320
    assert model.positions.weight.shape == (65, 64)
    counts = {name: sum(p.numel() for p in child.parameters())
              for name, child in model.named_children()}
    assert counts["encoder"] == 4 * (320 * 320 + 320) + 2 * (320 * 320 + 320) + 4 * 320
    assert counts["dnn"] == (704 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + 257
    total = trainable_parameters(model)
    assert total == 8_622_785, total
