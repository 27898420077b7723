"""Validation AUC at every evaluation of recorded comparison runs: under- or over-fitted, read.

    python benchmarks/learning_curves.py --dataset MicroLens50k \
        --expids Transformer_DCN_MicroLens50k TransAct_MicroLens50k DIEN_MicroLens50k

Reads the logs ``benchmarks/results/<dataset>/runs/<expid>_seed<S>.log`` that
``compare_models.py`` keeps beside each run's record (every ``Evaluation @epoch E - batch B``
line and the ``[Metrics] AUC`` line after it) and writes ``learning_curves.{csv,png}`` there:
valid AUC against epochs trained (``E - 1 + B / batches per epoch``), one line per seed, one
colour per expid. No training: the curves are those of the recorded runs.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fuxictr_mmctr.errors import UserError, exit_on_user_error  # noqa: E402

EVALUATION = re.compile(r"Evaluation @epoch (\d+) - batch (\d+):")
METRIC = re.compile(r"\[Metrics\] AUC: ([0-9.]+)\s*$")
RUN_LOG = re.compile(r"^(?P<expid>.+)_seed(?P<seed>\d+)\.log$")


def read_curve(log_path: str, batches_per_epoch: int) -> list[tuple[float, float]]:
    """``[(epochs trained, valid AUC)]`` of every evaluation during training in ``log_path``
    (the final evaluation of the best checkpoint, which carries more metrics, is left out)."""
    points, pending = [], None
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            found = EVALUATION.search(line)
            if found:
                epoch, batch = int(found.group(1)), int(found.group(2))
                pending = epoch - 1 + batch / batches_per_epoch
                continue
            found = METRIC.search(line)
            if found and pending is not None:
                points.append((round(pending, 4), float(found.group(1))))
                pending = None
    return points


def batches_per_epoch(config_dir: str, expid: str) -> int:
    """Training batches per epoch of ``expid`` (its train rows over its batch size)."""
    import pyarrow.parquet as pq

    from fuxictr_mmctr.pipeline.experiment import load_params

    params = load_params(config_dir, expid)
    rows = pq.ParquetFile(params["train_data"]).metadata.num_rows
    return math.ceil(rows / params["batch_size"])


def curves(config_dir: str, runs_dir: str, expids: list[str]) -> dict:
    """``{expid: {seed: [(epochs, auc)]}}`` of the logs in ``runs_dir``."""
    found = {expid: {} for expid in expids}
    names = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    for expid in expids:
        per_epoch = batches_per_epoch(config_dir, expid)
        for name in names:
            match = RUN_LOG.match(name)
            if match and match.group("expid") == expid:
                points = read_curve(os.path.join(runs_dir, name), per_epoch)
                if points:
                    found[expid][int(match.group("seed"))] = points
        if not found[expid]:
            raise UserError(f"{runs_dir}: no run log of {expid} with evaluations "
                            f"(<expid>_seed<S>.log); run compare_models.py first")
    return found


def write_csv(found: dict, path: str) -> None:
    from fuxictr_mmctr.fileio import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["expid", "seed", "epochs", "valid_auc"])
    for expid, seeds in found.items():
        for seed, points in sorted(seeds.items()):
            for epochs, auc in points:
                writer.writerow([expid, seed, f"{epochs:.4f}", f"{auc:.6f}"])
    write_text_atomic(path, buffer.getvalue())


def draw(found: dict, path: str, dataset_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fuxictr_mmctr.fileio import atomic_path

    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (expid, seeds) in enumerate(found.items()):
        colour = colours[index % len(colours)]
        for number, (seed, points) in enumerate(sorted(seeds.items())):
            epochs, aucs = zip(*points)
            axes.plot(epochs, aucs, marker="o", markersize=3, color=colour, alpha=0.85,
                      label=expid if number == 0 else None)
    axes.set_xlabel("epochs trained")
    axes.set_ylabel("valid AUC")
    axes.set_title(f"Validation AUC during training on {dataset_id} (one line per seed)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=120)
    plt.close(figure)


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="./config/", help="folder with the configs")
    parser.add_argument("--dataset", required=True, help="dataset_id of the comparison")
    parser.add_argument("--expids", nargs="+", required=True, help="expids to draw")
    parser.add_argument("--out", help="comparison folder (default benchmarks/results/<dataset>)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("benchmarks", "results", args.dataset)
    found = curves(args.config, os.path.join(out, "runs"), args.expids)
    write_csv(found, os.path.join(out, "learning_curves.csv"))
    draw(found, os.path.join(out, "learning_curves.png"), args.dataset)
    for expid, seeds in found.items():
        best = [max(points, key=lambda point: point[1]) for points in seeds.values()]
        print(f"{expid}: best valid AUC at epochs "
              + ", ".join(f"{epochs:g} ({auc:.4f})" for epochs, auc in best))
    print(f"wrote {os.path.join(out, 'learning_curves.csv')}, "
          f"{os.path.join(out, 'learning_curves.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
