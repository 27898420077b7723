"""Early stopping on a monitored metric, with the rules of FuxiCTR's BaseModel.

The monitored value is ``fuxictr.utils.Monitor(kv).get_value(logs)``: one metric name, or a
weighted sum such as ``{"AUC": 1, "logloss": -1}``. An evaluation improves on the best value
when it beats it by more than ``min_delta`` (in the direction of ``mode``); otherwise the
patience counter grows, and training stops once it reaches ``patience``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fuxictr.utils import Monitor

from fuxictr_mmctr.errors import UserError


@dataclass
class Decision:
    """Outcome of one evaluation: the monitored ``value``, whether it ``improved`` on the best,
    and whether training should ``stop``."""

    value: float
    improved: bool
    stop: bool


class EarlyStopping:
    """Tracks the best monitored value and the plateau counter.

    Args:
        monitor: metric name or ``{name: weight}`` (FuxiCTR's ``monitor`` parameter).
        mode: ``"max"`` or ``"min"``.
        patience: evaluations without improvement before stopping.
        min_delta: smallest change that counts as an improvement (FuxiCTR uses 1e-6).
    """

    def __init__(self, monitor="AUC", mode: str = "max", patience: int = 2,
                 min_delta: float = 1e-6):
        if mode not in ("max", "min"):
            raise UserError(f"monitor_mode must be 'max' or 'min', got {mode!r}")
        self.monitor = monitor if isinstance(monitor, Monitor) else Monitor(kv=monitor)
        self.mode = mode
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = -np.inf if mode == "max" else np.inf
        self.stale_evaluations = 0
        self.stopped = False

    @property
    def metrics(self) -> list[str]:
        """Metric names the monitored value needs."""
        return list(self.monitor.get_metrics())

    def update(self, logs: dict) -> Decision:
        """Record one evaluation's ``{metric: value}``; return what to do."""
        value = float(self.monitor.get_value(logs))
        if self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best = value
            self.stale_evaluations = 0
        else:
            self.stale_evaluations += 1
        self.stopped = self.stale_evaluations >= self.patience
        return Decision(value=value, improved=improved, stop=self.stopped)

    def state_dict(self) -> dict:
        return {"best": float(self.best), "stale_evaluations": self.stale_evaluations,
                "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.stale_evaluations = int(state["stale_evaluations"])
        self.stopped = bool(state["stopped"])
