"""Reusable torch modules shared by every model (docs/design.md, "Module map").

A model reads as ItemEncoder -> a sequence arch -> CrossDeepArch -> PredictionHead; the
history masks and masked pooling every sequence arch uses live in :mod:`.sequence`.
"""
from fuxictr_mmctr.layers.cross_deep import CrossDeepArch
from fuxictr_mmctr.layers.embedding import SideFeatureEmbedding
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.sequence import (
    history_mask,
    keep_one_key,
    last_k,
    masked_max,
    masked_mean,
    truncate_history,
)
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer

__all__ = [
    "CrossDeepArch",
    "ItemEncoder",
    "PredictionHead",
    "SideFeatureEmbedding",
    "TargetAwareTransformer",
    "history_mask",
    "keep_one_key",
    "last_k",
    "masked_max",
    "masked_mean",
    "truncate_history",
]
