"""Shared embedding pieces: masked pooling, side features, and the regulariser's view."""
from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from fuxictr.pytorch.models import BaseModel

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.feature_map import MMCTRFeatureMap
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.layers.embedding import SideFeatureEmbedding, masked_mean
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from tests.builders import tiny_item_feature_map


def test_masked_mean_ignores_padding_and_gives_zeros_when_all_padding():
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                               [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(embeddings, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def side_feature_map():
    feature_map = MMCTRFeatureMap("side", "/nonexistent")
    feature_map.features = {
        contract.USER_ID: {"type": "meta"},
        contract.LIKES_LEVEL: {"source": "", "type": "categorical", "vocab_size": 11},
        contract.VIEWS_LEVEL: {"source": "", "type": "categorical", "vocab_size": 11},
        contract.ITEM_ID: {"source": "item", "type": "categorical", "vocab_size": 5,
                           "padding_idx": 0},
    }
    return feature_map


def test_side_feature_embedding_shapes_and_values():
    side = SideFeatureEmbedding(side_feature_map(), embedding_dim=3)
    assert side.features == [contract.LIKES_LEVEL, contract.VIEWS_LEVEL] and side.output_dim == 6
    batch = {contract.LIKES_LEVEL: torch.tensor([0, 10]), contract.VIEWS_LEVEL: torch.tensor([4, 4]),
             contract.ITEM_ID: torch.tensor([1, 2])}
    flat, fields = side(batch), side(batch, flatten=False)
    assert flat.shape == (2, 6) and fields.shape == (2, 2, 3)
    likes = side.embedding_dict.embedding_layers[contract.LIKES_LEVEL].weight
    torch.testing.assert_close(fields[1, 0], likes[10])
    assert likes[0].abs().sum() > 0  # level 0 is a real value, not padding


class _TinyModel(BaseModel):
    def __init__(self, feature_map, tmp_path):
        super().__init__(feature_map, model_id="tiny", embedding_regularizer=0.5,
                         net_regularizer=0.0, verbose=0, model_root=str(tmp_path), metrics=["AUC"])
        table = ItemTable({contract.ITEM_TAGS: torch.zeros(8, 3, dtype=torch.long).numpy(),
                           contract.ITEM_EMB: torch.ones(8, 4).numpy()})
        self.item_encoder = ItemEncoder(feature_map, table, embedding_dim=2)
        self.side = SideFeatureEmbedding(feature_map, embedding_dim=2)


def test_regularizer_treats_id_embeddings_as_embeddings(tmp_path):
    feature_map = tiny_item_feature_map(pretrain_dim=4, projection="linear", embedding_dim=2)
    feature_map.features.update(side_feature_map().features)
    model = _TinyModel(feature_map, tmp_path)
    dicts = [m for m in model.modules() if type(m) is FeatureEmbeddingDict]
    assert len(dicts) == 2  # the exact type the regulariser looks for (docs/design.md)
    expected = sum(0.5 / 2 * p.norm(2) ** 2 for d in dicts for p in d.parameters())
    torch.testing.assert_close(model.regularization_loss(), expected)
    embedding_names = {n for n, _ in model.named_parameters() if "embedding_layers" in n}
    assert any(contract.ITEM_ID in n for n in embedding_names)
    assert any(contract.ITEM_TAGS in n for n in embedding_names)
