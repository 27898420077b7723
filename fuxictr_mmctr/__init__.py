"""fuxictr_mmctr: a FuxiCTR plugin for multimodal click-through-rate prediction."""

__version__ = "0.1.0"
