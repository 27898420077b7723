"""Training: the one Trainer every model shares, and what it is made of.

:class:`~fuxictr_mmctr.training.trainer.Trainer` (the loop and the loss) is built by a model on
its first ``fit``/``evaluate``/``predict``; evaluation and prediction, the checkpoint rules, the
resume state and weights files, metrics, early stopping, the speed switches and the
distributed collectives each live in a module of their own (``docs/design.md`` has the map,
``docs/training.md`` the behaviour).
"""
from fuxictr_mmctr.training.early_stopping import Decision, EarlyStopping
from fuxictr_mmctr.training.metrics import METRICS, auc, evaluate_metrics, gauc, logloss

__all__ = ["METRICS", "Decision", "EarlyStopping", "auc", "evaluate_metrics", "gauc", "logloss"]
