"""Training support: vectorised metrics, early stopping, atomic checkpoints and resume state.

The training loop itself is :class:`fuxictr_mmctr.models.base.MultimodalRankModel` (FuxiCTR's
``BaseModel`` API); see ``docs/training.md``.
"""
from fuxictr_mmctr.training.early_stopping import Decision, EarlyStopping
from fuxictr_mmctr.training.metrics import METRICS, auc, evaluate_metrics, gauc, logloss

__all__ = ["METRICS", "Decision", "EarlyStopping", "auc", "evaluate_metrics", "gauc", "logloss"]
