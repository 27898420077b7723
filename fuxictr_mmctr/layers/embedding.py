"""Embedding pieces every model shares: id embeddings, masked pooling, vector projections.

Id embeddings live inside a real ``fuxictr`` ``FeatureEmbeddingDict`` instance (composition,
never a subclass): ``BaseModel.regularization_loss`` finds embedding parameters with an exact
``type(module) == FeatureEmbeddingDict`` check (docs/design.md), so this is what makes
``embedding_regularizer`` apply to them while projections fall under ``net_regularizer``.
"""
from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from torch import nn

from fuxictr_mmctr.data.feature_map import side_features

DEFAULT_INITIALIZER = "partial(nn.init.normal_, std=1e-4)"
#: Feature types a FeatureEmbeddingDict embeds from ids (or a scalar, for numeric).
ID_TYPES = ("categorical", "sequence", "numeric")


def id_embedding_dict(feature_map, features, embedding_dim: int,
                      embedding_initializer: str = DEFAULT_INITIALIZER):
    """A ``FeatureEmbeddingDict`` holding exactly ``features`` (``None`` when there are none).

    ``FeatureEmbeddingDict`` reads an empty ``required_feature_columns`` as "all features",
    hence the explicit ``None``.
    """
    features = list(features)
    if not features:
        return None
    return FeatureEmbeddingDict(feature_map, embedding_dim,
                                embedding_initializer=embedding_initializer,
                                required_feature_columns=features)


def feature_dim(feature_map, name: str, embedding_dim: int) -> int:
    """Embedding width of an id feature: its own ``embedding_dim`` or the model's."""
    return int(feature_map.features[name].get("embedding_dim", embedding_dim))


def masked_mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: ``(..., T, D)``, mask ``(..., T)`` bool -> ``(..., D)``.

    Rows with no valid position give zeros (not NaN).
    """
    weights = mask.to(embeddings.dtype)
    total = torch.einsum("...td,...t->...d", embeddings, weights)
    count = weights.sum(dim=-1, keepdim=True).clamp_min(1.0)
    return total / count


def vector_projection(projection: str, pretrain_dim: int, out_dim: int,
                      bias: bool = True) -> nn.Module:
    """Maps a ``(..., pretrain_dim)`` vector to ``(..., out_dim)``.

    ``none`` is the identity (``out_dim == pretrain_dim``), ``linear`` one Linear layer, ``mlp``
    Linear -> ReLU -> Linear with ``out_dim`` hidden units. ``bias=False`` drops the Linear
    biases (the challenge's DIN projects the frozen vector with a bias-free Linear).
    """
    if projection == "none":
        if out_dim != pretrain_dim:
            raise ValueError(f"projection none needs out_dim == pretrain_dim ({pretrain_dim})")
        return nn.Identity()
    if projection == "linear":
        return nn.Linear(pretrain_dim, out_dim, bias=bias)
    if projection == "mlp":
        return nn.Sequential(nn.Linear(pretrain_dim, out_dim, bias=bias), nn.ReLU(),
                             nn.Linear(out_dim, out_dim, bias=bias))
    raise ValueError(f"unknown projection {projection!r}")


class SideFeatureEmbedding(nn.Module):
    """Embeddings of the non-item, non-meta features (likes_level, views_level, ...).

    Args:
        feature_map: FuxiCTR FeatureMap (vocab sizes recorded by ``build_feature_map``).
        embedding_dim: width of each field (a feature's own ``embedding_dim`` wins).
        features: field names; default every side feature in feature-map order.

    ``forward(batch)``: ``{name: (B,) int64}`` -> ``(B, output_dim)`` (fields concatenated), or
    ``(B, num_fields, D)`` with ``flatten=False`` (needs equal field widths).

    Example::

        side = SideFeatureEmbedding(feature_map, embedding_dim=64)
        side_emb = side(batch)          # (B, 128) for likes_level, views_level
    """

    def __init__(self, feature_map, embedding_dim: int,
                 embedding_initializer: str = DEFAULT_INITIALIZER, features=None):
        super().__init__()
        self.features = list(side_features(feature_map) if features is None else features)
        self.embedding_dict = id_embedding_dict(feature_map, self.features, embedding_dim,
                                                embedding_initializer)
        self.field_dims = [feature_dim(feature_map, name, embedding_dim) for name in self.features]
        self.num_fields = len(self.features)
        self.output_dim = sum(self.field_dims)

    def forward(self, batch, flatten: bool = True) -> torch.Tensor:
        """``batch`` dict of ``(B,)`` ids -> ``(B, output_dim)`` or ``(B, F, D)``."""
        if self.embedding_dict is None:
            any_tensor = next(iter(batch.values()))
            return any_tensor.new_zeros((len(any_tensor), 0), dtype=torch.float32)
        embeddings = self.embedding_dict({name: batch[name] for name in self.features})
        fields = [embeddings[name] for name in self.features]
        return torch.cat(fields, dim=-1) if flatten else torch.stack(fields, dim=1)
