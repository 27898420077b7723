"""ItemEncoder: the item representation, padding, gather modes, frozen vs trainable parts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from tests.builders import tiny_item_feature_map

NUM_ROWS, TAGS, PRETRAIN = 12, 3, 6


def make_table(seed=0):
    rng = np.random.default_rng(seed)
    tags = rng.integers(1, 20, (NUM_ROWS, TAGS))
    tags[:, 0] = 0
    tags[5] = 0  # an item without tags: pooled tag embedding must be zeros
    vectors = rng.normal(size=(NUM_ROWS, PRETRAIN)).astype(np.float32)
    tags[0], vectors[0] = 0, 0
    return ItemTable({contract.ITEM_TAGS: tags, contract.ITEM_EMB: vectors})


def make_encoder(projection="linear", embedding_dim=4, **kwargs):
    torch.manual_seed(0)
    feature_map = tiny_item_feature_map(PRETRAIN, tags=TAGS, projection=projection,
                                        embedding_dim=embedding_dim if projection != "none" else None)
    return ItemEncoder(feature_map, make_table(), embedding_dim=embedding_dim,
                       embedding_initializer="partial(nn.init.normal_, std=1.0)", **kwargs)


def reference(encoder, item_id: int) -> torch.Tensor:
    """The representation of one item, computed directly from the weights."""
    layers = encoder.id_embeddings.embedding_layers
    if item_id == contract.PADDING_ID:
        return torch.zeros(encoder.output_dim)
    tags = encoder.item_table.column(contract.ITEM_TAGS)[item_id].tolist()
    tag_rows = [layers[contract.ITEM_TAGS].weight[t] for t in tags if t != 0]
    pooled = torch.stack(tag_rows).mean(0) if tag_rows else torch.zeros(encoder.feature_dims[1])
    vector = encoder.projections[contract.ITEM_EMB](encoder.item_table.column(contract.ITEM_EMB)[item_id])
    return torch.cat([layers[contract.ITEM_ID].weight[item_id], pooled, vector])


@pytest.mark.parametrize("gather_mode", ["rows", "table", "auto"])
def test_representation_matches_per_item_reference(gather_mode):
    encoder = make_encoder(gather_mode=gather_mode)
    assert encoder.output_dim == 4 + 4 + 4
    item_ids = torch.tensor([[0, 3, 5], [11, 0, 1]])
    encoded = encoder(item_ids)
    assert encoded.shape == (2, 3, encoder.output_dim)
    for b in range(2):
        for position in range(3):
            torch.testing.assert_close(encoded[b, position],
                                       reference(encoder, int(item_ids[b, position])))


def test_raw_vector_without_projection_and_without_multimodal():
    raw = make_encoder(projection="none", embedding_dim=4)
    assert raw.output_dim == 4 + 4 + PRETRAIN
    encoded = raw(torch.tensor([7]))
    torch.testing.assert_close(encoded[0, -PRETRAIN:], raw.item_table.column(contract.ITEM_EMB)[7])
    ids_only = make_encoder(use_multimodal=False)
    assert ids_only.output_dim == 8 and len(ids_only.projections) == 0


def test_auto_mode_encodes_table_first_only_when_it_is_cheaper():
    encoder = make_encoder()
    assert encoder.uses_table_first(NUM_ROWS) and not encoder.uses_table_first(NUM_ROWS - 1)


def test_target_and_history_share_one_encoder():
    encoder = make_encoder()
    target, history = torch.tensor([3, 4]), torch.tensor([[0, 1, 2], [5, 6, 7]])
    target_emb, history_emb = encoder.encode_target_and_history(target, history)
    torch.testing.assert_close(target_emb, encoder(target))
    torch.testing.assert_close(history_emb, encoder(history))


@pytest.mark.parametrize("gather_mode", ["rows", "table"])
def test_frozen_table_stays_bit_identical_while_projection_and_ids_learn(gather_mode):
    encoder = make_encoder(gather_mode=gather_mode)
    frozen = encoder.item_table.column(contract.ITEM_EMB).clone()
    projection = encoder.projections[contract.ITEM_EMB].weight.detach().clone()
    id_weights = encoder.id_embeddings.embedding_layers[contract.ITEM_ID].weight.detach().clone()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        encoder(torch.tensor([[1, 2, 3, 0], [4, 4, 9, 10]])).pow(2).sum().backward()
        assert encoder.item_table.column(contract.ITEM_EMB).grad is None
        optimizer.step()
    assert not encoder.item_table.column(contract.ITEM_EMB).requires_grad
    assert torch.equal(encoder.item_table.column(contract.ITEM_EMB), frozen)
    assert not torch.equal(encoder.projections[contract.ITEM_EMB].weight, projection)
    new_ids = encoder.id_embeddings.embedding_layers[contract.ITEM_ID].weight
    assert not torch.equal(new_ids[1], id_weights[1])
    assert torch.equal(new_ids[0], torch.zeros_like(new_ids[0]))  # padding row stays zero


def test_finetune_makes_a_trainable_copy_and_leaves_the_table_alone():
    feature_map = tiny_item_feature_map(PRETRAIN, tags=TAGS)
    feature_map.features[contract.ITEM_EMB]["finetune"] = True
    encoder = ItemEncoder(feature_map, make_table(), embedding_dim=4)
    frozen = encoder.item_table.column(contract.ITEM_EMB).clone()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.1)
    encoder(torch.tensor([2, 3])).sum().backward()
    optimizer.step()
    assert torch.equal(encoder.item_table.column(contract.ITEM_EMB), frozen)
    assert not torch.equal(encoder.finetuned_vectors[contract.ITEM_EMB][2], frozen[2])
    assert torch.equal(encoder.finetuned_vectors[contract.ITEM_EMB][7], frozen[7])


def test_evaluation_encodes_the_table_once_until_a_weight_changes():
    encoder = make_encoder(gather_mode="auto").eval()
    tables = []
    original = encoder.encode_rows

    def counting(row_ids):
        tables.append(row_ids is None)
        return original(row_ids)

    encoder.encode_rows = counting
    ids = torch.tensor([[3, 0, 7], [1, 2, 0]])
    with torch.no_grad():
        first = encoder(ids)
        assert encoder(ids[:1]).equal(first[:1])
        assert tables == [True]                     # one table encoding for both batches
        encoder.projections[contract.ITEM_EMB].weight.mul_(2.0)      # a weight changes
        changed = encoder(ids)
    assert tables == [True, True] and not changed.equal(first)
    encoder.train()
    encoder(ids).sum().backward()                   # training: rows, with gradients
    assert tables == [True, True, False] and encoder._evaluation_table is None
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids), changed)
    rows_only = make_encoder(gather_mode="rows").eval()
    with torch.no_grad():
        rows_only(ids)
    assert rows_only._evaluation_table is None
