"""Reusable torch modules shared by every model (docs/design.md, "Module map").

Every model reads its batch through :class:`InputArch` (item encoder, side embeddings, history
mask) and builds its arch from the pieces below; the history masks and masked pooling every
sequence arch uses live in :mod:`.sequence`.
"""
from fuxictr_mmctr.layers.cross_deep import CrossDeepArch, LowRankMixtureCrossNet
from fuxictr_mmctr.layers.embedding import SideFeatureEmbedding
from fuxictr_mmctr.layers.fm import FactorizationMachine
from fuxictr_mmctr.layers.input_arch import InputArch, ModelInputs
from fuxictr_mmctr.layers.interest_gru import AUGRU, BilinearAttention, MaskedGRU
from fuxictr_mmctr.layers.item_encoder import ItemEncoder
from fuxictr_mmctr.layers.positional import RecencyPositionalEmbedding
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.quadratic import QuadraticInteractionNetwork, QuadraticLayer
from fuxictr_mmctr.layers.relu_attention import ReLUTargetAttention
from fuxictr_mmctr.layers.sequence import (
    history_mask,
    keep_one_key,
    last_k,
    masked_max,
    masked_mean,
    truncate_history,
)
from fuxictr_mmctr.layers.target_attention import TargetAttentionPooling, masked_softmax
from fuxictr_mmctr.layers.target_aware_transformer import TargetAwareTransformer

__all__ = [
    "AUGRU",
    "BilinearAttention",
    "CrossDeepArch",
    "FactorizationMachine",
    "InputArch",
    "ItemEncoder",
    "LowRankMixtureCrossNet",
    "MaskedGRU",
    "ModelInputs",
    "PredictionHead",
    "QuadraticInteractionNetwork",
    "QuadraticLayer",
    "ReLUTargetAttention",
    "RecencyPositionalEmbedding",
    "SideFeatureEmbedding",
    "TargetAttentionPooling",
    "TargetAwareTransformer",
    "history_mask",
    "keep_one_key",
    "last_k",
    "masked_max",
    "masked_mean",
    "masked_softmax",
    "truncate_history",
]
