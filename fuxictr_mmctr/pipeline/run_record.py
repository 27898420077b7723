"""One seeded run of an expid, recorded as JSON: the unit of a model comparison.

``python -m fuxictr_mmctr.pipeline.run_record --config DIR --expid ID --seed S --gpu G --out F``
trains ``ID`` with ``seed: S`` (model id ``<ID>_seed<S>``, so seeds never share checkpoints),
evaluates it like ``run_expid.py`` (gAUC added to the metrics) and writes ``F``::

    {"status": "ok", "expid", "model", "dataset_id", "seed", "config_hash",
     "valid": {"AUC", "gAUC", "logloss"}, "test_auc", "oracle_auc", "parameters",
     "train_seconds", "train_samples", "epochs", "samples_per_second", "epoch_seconds",
     "peak_host_mb", "peak_host_mb_source", "peak_gpu_mb", "device", "finished",
     "valid_slices", "valid_bootstrap"}

``valid_slices`` and ``valid_bootstrap`` analyse the best checkpoint's valid scores row by row
(:mod:`.row_analysis`)::

    "valid_slices": {"version": 1,
                     "history_length": {"1": {"auc": 0.71, "rows": 812}, "2-3": {...}, ...},
                     "popularity": {"cold": {"auc": null, "rows": 0}, "tail": {...}, "head": {...}}}
    "valid_bootstrap": {"seed": 20250101, "resamples": 1000, "users": U, "rows": N,
                        "auc": [1000 AUCs, 6 decimals, null where undefined]}

They are left out when the valid split is not the dataset folder's ``valid.parquet`` (or the
analysis fails, with a warning in the log). Records written before they existed lack them;
neither is part of the config hash.

A comparison (:mod:`.comparison`) starts one such process per run: a crash, a config error or an
out-of-memory kill stays that run's failure, peak memory is that run's own, and runs spread over
devices like the tuner's. The file is written atomically and only after a finished run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
from datetime import datetime

from fuxictr_mmctr.errors import UserError, exit_on_user_error

#: Metrics every compared run reports (the expid's own ``metrics`` are replaced).
COMPARISON_METRICS = ["AUC", "gAUC", "logloss"]
#: How ``peak_host_mb`` was measured; records without it are from before this was right.
PEAK_SOURCE = "VmHWM"
#: Keys that name or place a run without changing what it computes: left out of the hash.
#: (``packed_history`` skips padding exactly: the same run, only faster.)
UNHASHED_KEYS = ("gpu", "model_id", "verbose", "model_root", "packed_history")
#: Keys whose value here means "as if the key were absent": a config that spells them out
#: hashes like one that does not, so adding a switch to ``Base`` keeps recorded runs.
NEUTRAL_VALUES = {"precision": "fp32", "compile": False}
#: Parts of a synthetic ``oracle.json`` that differ between machines generating the same data.
VOLATILE_ORACLE_KEYS = ("generation_seconds",)


def seeded_overrides(expid: str, seed: int) -> dict:
    """Config keys a comparison run replaces: its seed, its own model id, the metrics."""
    return {"seed": int(seed), "model_id": f"{expid}_seed{int(seed)}",
            "metrics": list(COMPARISON_METRICS)}


def data_identity(params: dict) -> dict:
    """What identifies the data a run trains on, the same on every machine that holds it.

    Synthetic data (a folder with an ``oracle.json``) is identified by that report without the
    time generation took: preset, seed, generator version and the oracle figures pin the rows,
    and the report is the same wherever the data was generated. Its parquet sizes are not used:
    they change with the pyarrow version that wrote them. Other data is identified by each
    split's and the item table's size in bytes (files not there are ``None``).
    """
    from fuxictr_mmctr.pipeline.datasets import oracle_report

    report = oracle_report(params)
    if report is not None:
        stable = {key: value for key, value in report.items() if key not in VOLATILE_ORACLE_KEYS}
        text = json.dumps(stable, sort_keys=True)
        return {"oracle.json": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]}
    identity = {}
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        path = params.get(key)
        identity[key] = os.path.getsize(path) if path and os.path.exists(path) else None
    return identity


def config_hash(params: dict) -> str:
    """Hash of a run's checked params (naming keys left out) and its data identity: a recorded
    run is reused only while both are unchanged."""
    kept = {key: value for key, value in params.items() if key not in UNHASHED_KEYS
            and not (key in NEUTRAL_VALUES and value == NEUTRAL_VALUES[key])}
    text = json.dumps({"params": kept, "data": data_identity(params)}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def peak_host_mb() -> float:
    """Peak resident memory of this process image, in MB.

    Read from ``/proc/self/status`` (``VmHWM``), which starts afresh at ``exec``: the run's own
    peak. ``getrusage``'s ``ru_maxrss`` would carry over the peak of the process that started
    the run (Linux keeps it across ``fork`` + ``exec``), so it is only the fallback where there is
    no ``/proc``.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def device_name(gpu: int) -> str:
    """``"NVIDIA H100 80GB HBM3 (cuda:0)"`` or the CPU model and its core count."""
    if gpu is not None and gpu >= 0:
        import torch

        return f"{torch.cuda.get_device_name(gpu)} (cuda:{gpu})"
    return cpu_name()


def cpu_name() -> str:
    """The CPU model (from ``/proc/cpuinfo`` where there is one) and the usable core count."""
    from fuxictr_mmctr.machine import cpu_model

    model = cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def record_run(config_dir: str, expid: str, seed: int, gpu: int, out_path: str) -> dict:
    """Train and evaluate one seeded run and write its record to ``out_path``."""
    import torch

    from fuxictr_mmctr.fileio import write_text_atomic
    from fuxictr_mmctr.pipeline.experiment import load_params, run_experiment

    overrides = seeded_overrides(expid, seed)
    params = load_params(config_dir, expid, gpu, overrides)
    result = run_experiment(config_dir, expid, gpu=gpu, overrides=overrides, valid_scores=True)
    params = load_params(config_dir, expid, gpu, overrides)  # the data exists now: hash it
    epochs = result["train_samples"] / max(_train_rows(params), 1)
    train_seconds = result["train_seconds"]
    record = {
        "status": "ok",
        "expid": expid,
        "model": params["model"],
        "dataset_id": params["dataset_id"],
        "seed": int(seed),
        "config_hash": config_hash(params),
        "valid": {name: float(value) for name, value in result["valid"].items()},
        "test_auc": _test_auc(result),
        "oracle_auc": result["oracle_auc"],
        "parameters": int(result["parameters"]),
        "train_seconds": round(train_seconds, 2),
        "train_samples": int(result["train_samples"]),
        "epochs": round(epochs, 3),
        "samples_per_second": round(result["train_samples"] / max(train_seconds, 1e-9), 1),
        "epoch_seconds": round(train_seconds / epochs, 2) if epochs > 0 else None,
        "peak_host_mb": peak_host_mb(),
        "peak_host_mb_source": PEAK_SOURCE,
        "peak_gpu_mb": (round(torch.cuda.max_memory_allocated(gpu) / 2**20, 1)
                        if gpu >= 0 else None),
        "device": device_name(gpu),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    # After the peak was read: the analysis's memory is not the run's.
    record.update(valid_analysis(params, result["valid_scores"]))
    write_text_atomic(out_path, record_text(record))
    return record


def valid_analysis(params: dict, scores) -> dict:
    """``{"valid_slices", "valid_bootstrap"}`` of a run's valid ``scores (N,)`` (file order),
    from the dataset folder (:func:`.row_analysis.valid_record`); ``{}`` when the run's valid
    split is not that folder's ``valid.parquet``, or when the analysis fails on the folder's
    data (one warning line: a finished training run is never lost to its analysis)."""
    import logging

    from fuxictr_mmctr.data.schema import split_file
    from fuxictr_mmctr.pipeline.datasets import dataset_folder
    from fuxictr_mmctr.pipeline.row_analysis import DatasetRows, valid_record

    folder = dataset_folder(params)
    if os.path.abspath(params["valid_data"]) != os.path.join(folder, split_file("valid")):
        return {}
    try:
        return valid_record(scores, DatasetRows(folder))
    except UserError as error:
        logging.warning("No valid slices or bootstrap in the record: %s", error)
        return {}


#: Stands in for the bootstrap AUCs while the rest of a record is indented.
_AUCS_PLACEHOLDER = "@valid_bootstrap_auc@"


def record_text(record: dict) -> str:
    """A record as indented JSON, its bootstrap AUCs on one line (not 1,000 lines)."""
    bootstrap = record.get("valid_bootstrap")
    if not isinstance(bootstrap, dict) or "auc" not in bootstrap:
        return json.dumps(record, indent=2) + "\n"
    shown = {**record, "valid_bootstrap": {**bootstrap, "auc": _AUCS_PLACEHOLDER}}
    return json.dumps(shown, indent=2).replace(json.dumps(_AUCS_PLACEHOLDER),
                                               json.dumps(bootstrap["auc"])) + "\n"


def _train_rows(params: dict) -> int:
    """Rows of the train split (from its parquet metadata)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(params["train_data"]).metadata.num_rows


def _test_auc(result: dict):
    """The test AUC against truth.parquet, else on a labelled test split, else None."""
    if result.get("test_auc_truth") is not None:
        return float(result["test_auc_truth"])
    if result.get("test"):
        return float(result["test"]["AUC"])
    return None


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="one seeded run of an expid, as JSON")
    parser.add_argument("--config", required=True)
    parser.add_argument("--expid", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.out.strip():
        raise UserError("--out is an empty path")
    record_run(args.config, args.expid, args.seed, args.gpu, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
