"""benchmarks/learning_curves.py: evaluation points read from a run log."""
from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script():
    spec = importlib.util.spec_from_file_location(
        "learning_curves", os.path.join(REPO, "benchmarks", "learning_curves.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOG = """\
2026-12-06 02:05:49,861 P1 INFO Evaluation @epoch 1 - batch 50:
2026-12-06 02:05:56,512 P1 INFO [Metrics] AUC: 0.795498
2026-12-06 02:06:45,279 P1 INFO Evaluation @epoch 2 - batch 1:
2026-12-06 02:06:56,894 P1 INFO [Metrics] AUC: 0.833184
2026-12-06 02:07:50,563 P1 INFO Evaluation @epoch 2 - batch 100:
2026-12-06 02:07:58,857 P1 INFO [Metrics] AUC: 0.850870
2026-12-06 02:12:40,799 P1 INFO [Metrics] AUC: 0.850870 - gAUC: 0.867767 - logloss: 0.395714
"""


def test_every_evaluation_during_training_is_a_point(tmp_path):
    path = tmp_path / "X_seed1.log"
    path.write_text(LOG)
    points = load_script().read_curve(str(path), batches_per_epoch=100)
    # The last line evaluates the best checkpoint after training: not a point of the curve.
    assert points == [(0.5, 0.795498), (1.01, 0.833184), (2.0, 0.85087)]
