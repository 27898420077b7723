"""Packed histories: the host-side history plan, and packed and unpacked forwards agree (same
weights, eval mode, float tolerance) for every packing layer and every model, with empty and
full-length histories and all-padding batches."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fuxictr_mmctr.data.batches import bucket_ladder, span_of_rows, trimmed_width
from fuxictr_mmctr.data.history_plan import (
    MIN_SLOTS,
    HistoryPlan,
    JaggedHistory,
    history_spans,
    plan_of_spans,
    with_plan,
    without_plan,
)
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.packing import apply_packed_history, history_trim_exact
from fuxictr_mmctr.layers.relu_attention import ReLUTargetAttention
from fuxictr_mmctr.layers.target_attention import TargetAttentionPooling
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer
from fuxictr_mmctr.models.registry import get_model_class, registered_models
from fuxictr_mmctr.pipeline.experiment import load_params
from tests.models.builders import L, feature_map_of, item_table_of, make_batch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
#: Long enough for every bucket of the ladder (8, 16, 32, 40): empty, short, mid and full rows.
LONG, LONG_LENGTHS = 40, [0, 1, 3, 8, 9, 16, 17, 31, 33, 40, 0, 40, 5, 24]


def left_padded_mask(lengths, length):
    """``(B, length) bool``: the last ``lengths[b]`` positions of row b are real."""
    lengths = torch.as_tensor(lengths)
    return torch.arange(length).unsqueeze(0) >= (length - lengths).unsqueeze(1)


def history_inputs(lengths, length, width, seed=0):
    """``target (B, width)``, ``history (B, length, width)`` zero at padding, ``mask``."""
    generator = torch.Generator().manual_seed(seed)
    mask = left_padded_mask(lengths, length)
    target = torch.randn(len(lengths), width, generator=generator)
    history = torch.randn(len(lengths), length, width, generator=generator) * mask.unsqueeze(-1)
    return target, history, mask


def plan_of(lengths, length) -> HistoryPlan:
    """The plan the loader makes for rows of these lengths, ``length`` columns wide."""
    return HistoryPlan.of_batch(plan_of_spans(np.asarray(lengths), length), length)


def jagged(history, mask) -> JaggedHistory:
    """``(B, L, D)`` and its mask as the input stage hands them to packed layers."""
    plan = plan_of(mask.sum(dim=1).numpy(), mask.shape[1])
    flat = F.pad(history.reshape(-1, history.shape[-1]), (0, 0, 0, 1))
    real = F.pad(mask.reshape(-1), (0, 1))
    return JaggedHistory(flat[plan.slots], real[plan.slots], plan)


# --- bucket ladder, spans and the plan ----------------------------------------------------------

def test_ladder_widths_and_trimmed_widths():
    assert bucket_ladder(100) == [8, 16, 32, 64, 100]
    assert bucket_ladder(30) == [8, 16, 30]
    assert bucket_ladder(6) == [6] and bucket_ladder(8) == [8]
    assert [trimmed_width(span, 100) for span in (0, 1, 8, 9, 64, 65, 100)] == \
        [8, 8, 8, 16, 64, 100, 100]
    assert trimmed_width(0, 5) == 5


def test_spans_on_the_device_and_on_the_host_agree():
    mask = left_padded_mask(LONG_LENGTHS, LONG)
    mask[2, LONG - 2] = False        # a gap inside a row stays inside its span
    assert history_spans(mask).tolist() == LONG_LENGTHS
    ids = mask.long() * 7
    assert span_of_rows(ids.numpy()).tolist() == LONG_LENGTHS


def test_the_plan_lists_real_positions_and_groups_rows_by_bucket():
    plan = plan_of_spans(np.array([2, 0, 10, 1, 9]), 10)       # ladder [8, 10]
    assert plan["history_lengths"].tolist() == [2, 0, 10, 1, 9]
    assert plan["history_slots"].tolist() == [8, 9] + list(range(20, 30)) + [39] + \
        list(range(41, 50))
    assert plan["history_order"].tolist() == [0, 1, 3, 2, 4]    # widths 8, 8, 8 | 10, 10
    assert plan["history_buckets"].tolist() == [10, 3, 2]         # W, then rows per width
    # Fewer than MIN_SLOTS real positions: fillers point one past the last position.
    assert plan_of_spans(np.array([0, 0, 0]), 4)["history_slots"].tolist() == [12] * MIN_SLOTS
    assert plan_of_spans(np.array([0, 1]), 4)["history_slots"].tolist() == [7, 8]


def test_plan_gathers_scatters_and_sums_without_reading_the_device():
    lengths = [2, 0, 3]
    plan = plan_of(lengths, 4)
    item_seq = torch.tensor([[0, 0, 5, 6], [0, 0, 0, 0], [0, 7, 8, 9]])
    assert plan.real_ids(item_seq).tolist() == [5, 6, 7, 8, 9]
    values = torch.arange(1.0, 6.0)
    assert plan.to_padded_scores(values).tolist() == [[0, 0, 1, 2], [0, 0, 0, 0], [0, 3, 4, 5]]
    assert plan.sum_rows(values).tolist() == [3, 0, 12]
    assert plan.per_position(torch.tensor([10.0, 20.0, 30.0])).tolist() == [10, 10, 30, 30, 30]
    kept = plan.truncated(2)               # the last 2 columns: row 2 keeps 8, 9
    assert kept.real_ids(item_seq[:, -2:]).tolist() == [5, 6, 0, 8, 9]
    assert kept.to_padded_scores(values).tolist() == [[1, 2], [0, 0], [4, 5]]


def test_a_plan_that_no_longer_describes_its_ids_is_an_error():
    batch = with_plan(make_batch(lengths=[3, 0, 5]))
    changed = dict(batch, item_seq=torch.zeros_like(batch["item_seq"]))
    plan = HistoryPlan.of_batch(changed, L)
    with pytest.raises(RuntimeError, match="does not describe its item_seq"):
        plan.check(changed["item_seq"])
    with pytest.raises(ValueError, match="made for 10 history columns but item_seq has 4"):
        HistoryPlan.of_batch(dict(batch, item_seq=batch["item_seq"][:, -4:]), 4)
    rebuilt = with_plan(without_plan(changed))
    HistoryPlan.of_batch(rebuilt, L).check(rebuilt["item_seq"])


# --- the bucketed encoder ----------------------------------------------------------------------

def test_bucketed_encoder_equals_the_padded_encoder_at_real_positions():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(12, 2, 24, 0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    tokens = torch.randn(len(LONG_LENGTHS), LONG, 12)
    mask = left_padded_mask(LONG_LENGTHS, LONG)
    key_padding_mask = ~mask
    key_padding_mask[:, -1] &= mask.any(dim=-1)     # an empty row keeps its last key
    calls = []

    def encode(rows, start):
        calls.append((None if rows is None else len(rows), LONG - start))
        rows = slice(None) if rows is None else rows
        return encoder(tokens[rows, start:], src_key_padding_mask=key_padding_mask[rows, start:])

    def pool(encoded, rows, start):
        """Real outputs in place, zeros at padding, left-padded back to L columns."""
        real = mask[slice(None) if rows is None else rows, start:]
        return F.pad(encoded * real.unsqueeze(-1), (0, 0, LONG - encoded.shape[1], 0)).flatten(1)

    with torch.no_grad():
        expected = pool(encoder(tokens, src_key_padding_mask=key_padding_mask), None, 0)
        packed = plan_of(LONG_LENGTHS, LONG).encode_in_buckets(encode, pool)
    torch.testing.assert_close(packed, expected, **TOLERANCE)
    # One group per bucket: 6 rows of span <= 8, 2 of 9..16, 3 of 17..32, 3 of 33..40.
    assert sorted(calls, key=lambda call: call[1]) == [(6, 8), (2, 16), (3, 32), (3, 40)]
    # A single group is encoded in place (no reordering) over its bucket's columns only.
    calls.clear()
    short = torch.tensor(LONG_LENGTHS) <= 8
    tokens, key_padding_mask, mask = tokens[short], key_padding_mask[short], mask[short]
    with torch.no_grad():
        narrow = plan_of(np.asarray(LONG_LENGTHS)[short.numpy()], LONG).encode_in_buckets(
            encode, pool)
    assert calls == [(None, 8)]
    torch.testing.assert_close(narrow, expected[short], **TOLERANCE)


# --- TargetAwareTransformer ------------------------------------------------------------------

def transformer(**options):
    torch.manual_seed(0)
    settings = dict(num_layers=2, num_heads=2, dim_feedforward=16, dropout=0.0, first_k_cols=3)
    return TargetAwareTransformer(6, **{**settings, **options})


@pytest.mark.parametrize("options", [
    {},                                            # k = 3: inside the narrowest bucket
    {"first_k_cols": 12},                          # k wider than the 8-column bucket
    {"target_concat": False},
    {"concat_max_pool": False, "first_k_cols": 20},
])
def test_transformer_packed_equals_unpacked(options):
    arch = transformer(**options).eval()
    assert arch.packed and arch.packable
    target, history, mask = history_inputs(LONG_LENGTHS, LONG, 6)
    with torch.no_grad():
        packed = arch(target, jagged(history, mask), mask)
        arch.packed = False
        unpacked = arch(target, history, mask)
        unpacked_jagged = arch(target, jagged(history, mask), mask)   # packed off: dense path
    torch.testing.assert_close(packed, unpacked, **TOLERANCE)
    torch.testing.assert_close(unpacked_jagged, unpacked, **TOLERANCE)
    # A batch of short and empty histories only (one narrow bucket) agrees too, and so does a
    # batch whose rows are all padding.
    short = torch.tensor(LONG_LENGTHS) <= 8
    empty = torch.zeros_like(mask)
    with torch.no_grad():
        arch.packed = True
        narrow = arch(target[short], jagged(history[short], mask[short]), mask[short])
        all_padding = arch(target, jagged(history * 0, empty), empty)
        arch.packed = False
        all_padding_unpacked = arch(target, history * 0, empty)
    torch.testing.assert_close(narrow, unpacked[short], **TOLERANCE)
    torch.testing.assert_close(all_padding, all_padding_unpacked, **TOLERANCE)


def test_transformer_packed_gradients_equal_unpacked_gradients():
    target, history, mask = history_inputs(LONG_LENGTHS, LONG, 6, seed=3)
    gradients = {}
    for packed in (True, False):
        arch = transformer().train()                 # dropout 0: the same function
        arch.packed = packed
        arch(target, jagged(history, mask), mask).square().sum().backward()
        gradients[packed] = {name: p.grad for name, p in arch.named_parameters()}
    for name, gradient in gradients[True].items():
        torch.testing.assert_close(gradient, gradients[False][name], rtol=1e-4, atol=1e-5)


def test_the_legacy_mask_keeps_the_unpacked_path():
    arch = transformer(legacy_mask=True)
    assert not arch.packable and not arch.packed
    with pytest.raises(UserError, match="legacy_mask"):
        arch.packed = True
    # Its output depends on the padding: trimming a row of 8 items to 8 columns (no padding
    # left for it to attend to) changes that row.
    target, history, mask = history_inputs([2, 8], 10, 6)
    with torch.no_grad():
        full = arch.eval()(target, history, mask)
        trimmed = arch(target, history[:, -8:], mask[:, -8:])
    assert not torch.allclose(full[1], trimmed[1])
    assert not history_trim_exact(arch)


# --- DIN and QIN attention -------------------------------------------------------------------

@pytest.mark.parametrize("normalization", ["none", "softmax"])
def test_din_attention_packed_equals_unpacked(normalization):
    torch.manual_seed(0)
    pooling = TargetAttentionPooling(6, hidden_units=(16, 8), dropout=0.0,
                                     normalization=normalization).eval()
    assert pooling.packed
    target, history, mask = history_inputs(LONG_LENGTHS, LONG, 6)
    with torch.no_grad():
        packed_weights = pooling.attention_weights(target, jagged(history, mask), mask)
        packed = pooling(target, jagged(history, mask), mask)
        pooling.packed = False
        unpacked_weights = pooling.attention_weights(target, history, mask)
        unpacked = pooling(target, history, mask)
    torch.testing.assert_close(packed_weights, unpacked_weights, **TOLERANCE)
    torch.testing.assert_close(packed, unpacked, **TOLERANCE)
    assert packed_weights[~mask].abs().max() == 0


def test_din_attention_with_dice_does_not_pack():
    pooling = TargetAttentionPooling(6, hidden_units=(8,), activation="Dice")
    assert not pooling.packable and not pooling.packed
    with pytest.raises(UserError, match="Dice"):
        pooling.packed = True


def test_qin_attention_packed_equals_unpacked_and_empty_batches_give_the_target():
    torch.manual_seed(0)
    attention = ReLUTargetAttention(6, output_bias=True).eval()
    assert attention.packed
    target, history, mask = history_inputs(LONG_LENGTHS, LONG, 6)
    empty_mask = torch.zeros_like(mask)
    with torch.no_grad():
        packed = attention(target, jagged(history, mask), mask)
        packed_weights = attention.weights(target, jagged(history, mask), mask)
        empty = attention(target, jagged(history * 0, empty_mask), empty_mask)
        attention.packed = False
        unpacked = attention(target, history, mask)
        unpacked_weights = attention.weights(target, history, mask)
    torch.testing.assert_close(packed, unpacked, **TOLERANCE)
    torch.testing.assert_close(packed_weights, unpacked_weights, **TOLERANCE)
    torch.testing.assert_close(empty, target + attention.W_o.bias, **TOLERANCE)


# --- every model -----------------------------------------------------------------------------

#: Rows of the model batch: empty, short, mid and full-length (L = 10) histories.
MODEL_LENGTHS = [0, 1, 4, 10, 7, 2, 0, 10, 9, 3, 8, 5]


def tiny_expid_model(name, tmp_path, **overrides):
    """Model ``name`` with its ``<name>_MicroLens_tiny`` hyperparameters on the in-memory tiny
    layout (L = 10), in eval mode."""
    params = {**load_params(CONFIG_DIR, f"{name}_MicroLens_tiny"), **overrides}
    params.update(verbose=0, model_root=str(tmp_path), gpu=-1)
    feature_map = feature_map_of()
    if params.get("feature_specs"):
        feature_map.update_feature_specs(params["feature_specs"])
    torch.manual_seed(0)
    model = get_model_class(name)(feature_map, item_table=item_table_of(), **params)
    return model.eval()


def logits(model, batch):
    with torch.no_grad():
        return model(batch)["logit"]


@pytest.mark.parametrize("name", registered_models())
def test_model_packed_equals_unpacked_and_trimmed_equals_full(name, tmp_path):
    model = tiny_expid_model(name, tmp_path)
    assert model.trims_history
    batch = with_plan(make_batch(seed=4, lengths=MODEL_LENGTHS))
    all_padding = with_plan(make_batch(seed=6, lengths=[0] * 5))
    packed = logits(model, batch), logits(model, all_padding)
    apply_packed_history(model, False)
    unpacked = logits(model, batch), logits(model, all_padding)
    torch.testing.assert_close(packed, unpacked, **TOLERANCE)
    apply_packed_history(model, True)
    # What the loader does with trim_history: drop the columns that are padding in every row.
    short = make_batch(seed=5, lengths=[0, 3, 5, 1, 0, 2])
    width = trimmed_width(5, L)
    assert width < L
    trimmed = with_plan(dict(short, item_seq=short["item_seq"][:, L - width:]))
    torch.testing.assert_close(logits(model, trimmed), logits(model, with_plan(short)),
                               **TOLERANCE)


def test_the_input_stage_encodes_real_ids_only_and_gives_the_padded_history(tmp_path):
    model = tiny_expid_model("DIN", tmp_path)
    batch = with_plan(make_batch(seed=4, lengths=MODEL_LENGTHS))
    encoded = []
    hook = model.inputs.item_encoder.register_forward_hook(
        lambda module, args, out: encoded.append(args[0].numel()))
    with torch.no_grad():
        inputs = model.inputs(batch)
        target, history = model.inputs.item_encoder.encode_target_and_history(
            batch["item_id"], batch["item_seq"])
    hook.remove()
    # Real positions and targets only (the reference, padded, encodes B * (L + 1) ids).
    assert encoded == [sum(MODEL_LENGTHS) + len(MODEL_LENGTHS), len(MODEL_LENGTHS) * (L + 1)]
    assert isinstance(inputs.history, JaggedHistory)
    torch.testing.assert_close(inputs.target_emb, target)
    torch.testing.assert_close(inputs.history_emb, history)


def test_which_models_pack_where(tmp_path):
    packing = {name: tiny_expid_model(name, tmp_path / name).packed_layers
               for name in ("Transformer_DCN", "TransAct", "DIN", "QIN", "BST")}
    assert packing == {"Transformer_DCN": ["sequence_arch"], "TransAct": ["sequence_arch"],
                       "DIN": ["attention"], "QIN": ["attention"], "BST": []}
    legacy = tiny_expid_model("Transformer_DCN", tmp_path / "legacy", legacy_mask=True)
    assert legacy.packed_layers == [] and not legacy.trims_history
    off = tiny_expid_model("Transformer_DCN", tmp_path / "off", packed_history=False)
    assert off.packed_layers == [] and not off.trims_history
    assert not off.sequence_arch.packed


def test_spans_of_a_real_split_are_those_of_its_rows(tiny_dataset):
    from fuxictr_mmctr.data.loader import load_split

    item_seq = np.asarray(load_split(os.path.join(tiny_dataset, "valid.parquet")).item_seq)
    spans = span_of_rows(item_seq)
    lengths = (item_seq != 0).sum(axis=1)
    assert np.array_equal(spans, lengths)       # left-padded: span = number of real items
    assert (spans == 0).any() and (spans == item_seq.shape[1]).any()
