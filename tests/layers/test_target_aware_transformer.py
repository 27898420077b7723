"""TargetAwareTransformer: shapes, correct padding mask, the published (legacy) mask, finiteness."""
from __future__ import annotations

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer

B, L, D = 4, 10, 6
#: History lengths per row: a short one, a 1-item one, an empty one, a full one.
LENGTHS = torch.tensor([4, 1, 0, L])


def make_arch(**kwargs):
    torch.manual_seed(0)
    arch = TargetAwareTransformer(D, num_layers=2, num_heads=2, dim_feedforward=16,
                                  dropout=0.2, first_k_cols=3, **kwargs)
    return arch.eval()


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    target_emb = torch.randn(B, D, generator=generator)
    history_emb = torch.randn(B, L, D, generator=generator)
    mask = torch.arange(L).unsqueeze(0) >= (L - LENGTHS).unsqueeze(1)   # left-padded
    history_emb = history_emb * mask.unsqueeze(-1)   # padding items encode to zeros
    return target_emb, history_emb, mask


@pytest.mark.parametrize("target_concat,concat_max_pool,token_dim,blocks",
                         [(True, True, 2 * D, 4), (False, True, D, 4), (True, False, 2 * D, 3)])
def test_output_width(target_concat, concat_max_pool, token_dim, blocks):
    arch = make_arch(target_concat=target_concat, concat_max_pool=concat_max_pool)
    assert arch.token_dim == token_dim and arch.output_dim == blocks * token_dim
    out = arch(*make_inputs())
    assert out.shape == (B, blocks * token_dim)


def test_values_at_padding_positions_cannot_change_the_output():
    arch = make_arch()
    target_emb, history_emb, mask = make_inputs()
    tokens = arch.tokens(target_emb, history_emb)
    with torch.no_grad():
        reference = arch.encode(tokens, mask)
        noisy = tokens + 100.0 * torch.randn_like(tokens) * (~mask).unsqueeze(-1)
        assert torch.equal(arch.encode(noisy, mask), reference)
        # ... while a real item's token does change its row (and only its row).
        changed = tokens.clone()
        changed[0, -1] += 1.0
        moved = (arch.encode(changed, mask) - reference).abs().sum(dim=-1)
    assert moved[0] > 1e-4 and moved[1:].max() == 0.0


def test_history_items_change_the_output_with_the_correct_mask():
    arch = make_arch()
    target_emb, history_emb, mask = make_inputs()
    _, other_history, _ = make_inputs(seed=1)
    with torch.no_grad():
        diff = (arch(target_emb, history_emb, mask) - arch(target_emb, other_history, mask)).abs()
    assert (diff[LENGTHS > 0].sum(dim=-1) > 1e-4).all()
    assert diff[LENGTHS == 0].max() == 0.0   # nothing to read in an empty history


def test_empty_history_gives_zero_last_k_and_the_max_pool_bias():
    arch = make_arch()
    target_emb, history_emb, mask = make_inputs()
    with torch.no_grad():
        empty_row = arch(target_emb, history_emb, mask)[LENGTHS == 0][0]
    k_block = arch.first_k_cols * arch.token_dim
    assert torch.equal(empty_row[:k_block], torch.zeros(k_block))
    assert torch.equal(empty_row[k_block:], arch.max_pool_linear.bias.detach())


@pytest.mark.parametrize("legacy_mask", [False, True])
def test_outputs_and_gradients_are_finite_for_empty_and_full_histories(legacy_mask):
    arch = make_arch(legacy_mask=legacy_mask).train()
    target_emb, history_emb, mask = make_inputs()
    history_emb.requires_grad_(True)
    out = arch(target_emb, history_emb, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(history_emb.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in arch.parameters() if p.grad is not None)


def test_legacy_mask_ignores_history_items_of_rows_shorter_than_max():
    arch = make_arch(legacy_mask=True)
    target_emb, history_emb, mask = make_inputs()
    _, other_history, _ = make_inputs(seed=1)
    with torch.no_grad():
        diff = (arch(target_emb, history_emb, mask) - arch(target_emb, other_history, mask)).abs()
    short = LENGTHS < L
    assert diff[short].max().item() == 0.0
    assert diff[~short].sum() > 1e-4   # a full row attends its last item (published fix-up)


def published_reference(arch, target_emb, history_emb, valid):
    """The published algorithm, restated: ``valid`` (True = real item) used as the key padding
    mask (True = ignore), rows with every key ignored get their last key back, outputs at ignored
    positions zeroed, last k flattened, max over attended positions through the Linear."""
    key_padding_mask = valid.clone()
    key_padding_mask[key_padding_mask.all(dim=-1), -1] = False
    tokens = torch.cat([history_emb, target_emb.unsqueeze(1).expand(-1, L, -1)], dim=-1)
    out = arch.encoder(tokens, src_key_padding_mask=key_padding_mask)
    out = out.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
    last = out[:, -arch.first_k_cols:].flatten(start_dim=1)
    pooled = out.masked_fill(key_padding_mask.unsqueeze(-1), -1e9).max(dim=1).values
    return torch.cat([last, arch.max_pool_linear(pooled)], dim=-1)


def test_legacy_mask_matches_the_published_algorithm():
    arch = make_arch(legacy_mask=True)
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(arch(*inputs), published_reference(arch, *inputs))


def test_first_k_larger_than_history_is_left_padded_with_zeros():
    torch.manual_seed(0)
    arch = TargetAwareTransformer(D, num_heads=1, dim_feedforward=8, first_k_cols=L + 2).eval()
    target_emb, history_emb, mask = make_inputs()
    with torch.no_grad():
        out = arch(target_emb, history_emb, mask)
    assert out.shape == (B, (L + 3) * 2 * D)
    assert torch.equal(out[:, :2 * 2 * D], torch.zeros(B, 2 * 2 * D))


@pytest.mark.parametrize("kwargs,message", [
    ({"num_heads": 5}, "num_heads=5 must divide"),
    ({"first_k_cols": 0, "concat_max_pool": False}, "leaves no sequence output"),
])
def test_bad_hyperparameters_are_one_line_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as error:
        TargetAwareTransformer(D, **kwargs)
    assert "\n" not in str(error.value)
