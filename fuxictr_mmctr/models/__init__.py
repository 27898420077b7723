"""Models, one per file, each registered by name in :mod:`.registry`.

``getattr(fuxictr_mmctr.models, "Transformer_DCN")`` works as FuxiCTR runners expect; the
pipeline resolves names with :func:`get_model_class` (which also finds every other model file).
"""
from fuxictr_mmctr.models.registry import get_model_class, register_model, registered_models
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN

__all__ = ["Transformer_DCN", "get_model_class", "register_model", "registered_models"]
