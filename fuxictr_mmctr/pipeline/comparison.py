"""Models side by side: seeded runs of several expids, one table, one chart.

:func:`compare` plans ``expids x seeds`` runs, reuses every run already recorded under
``<out>/runs/`` with the same config and data (:func:`.run_record.config_hash`), trains the rest
one process per run (:mod:`.run_record`) on a pool of device slots, and writes::

    <out>/comparison.csv          one row per expid: metrics as mean and std over seeds, cost,
                                  status, and the paired-bootstrap difference to the best row
    <out>/comparison.md           the same as a table, with the machine and the oracle lines
    <out>/comparison.png          valid AUC per expid (sorted, error bars), oracle lines (synthetic)
    <out>/comparison_slices.csv   valid AUC per history-length and target-popularity bucket
    <out>/comparison_slices.md    the same as a table, with each bucket's row count
    <out>/comparison_slices.png   the same as lines over the buckets, one per expid

Besides the expids, the tables hold the training-free baselines of
:func:`.row_analysis.heuristic_scores` (model ``heuristic``), computed at table time from the
dataset folder. Slices and bootstrap vectors of trained runs come from their records
(:mod:`.run_record`), so ``--no-train`` rebuilds every table from the records and the folder.
A run that fails (bad config, crash, killed) is recorded with its one-line reason and its
expid's row is marked failed; the table is written all the same. Seeds are the expid's own
``seed`` plus 0, 1, ...: the first seed's run is the one ``run_expid.py`` makes.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import write_text_atomic
from fuxictr_mmctr.pipeline import row_analysis, run_record
from fuxictr_mmctr.pipeline.child_process import die_with_parent

#: Columns of ``comparison.csv``, in order.
CSV_COLUMNS = (
    "expid", "model", "status", "seeds", "seeds_ok", "valid_auc_mean", "valid_auc_std",
    "gauc_mean", "gauc_std", "logloss_mean", "logloss_std", "test_auc_mean", "test_auc_std",
    "oracle_auc", "gap_to_oracle", "diff_to_best", "diff_low", "diff_high", "p_value",
    "significance", "parameters", "samples_per_second", "epoch_seconds", "peak_host_mb",
    "peak_gpu_mb", "device", "reason",
)
#: The model name of the training-free rows.
HEURISTIC_MODEL = "heuristic"
#: Marks of the ``significance`` column (see :func:`add_significance`).
BEST_MARK, SIGNIFICANT_MARK, NOT_SIGNIFICANT_MARK = "best", "*", "≈"
#: How often the scheduler looks at its running processes.
POLL_SECONDS = 0.5


@dataclass
class PlannedRun:
    """One seeded run of an expid: where its record goes and whether it must be trained."""

    expid: str
    seed: int
    record_path: str
    log_path: str
    expected_hash: str | None = None
    record: dict | None = None              # set when reused or finished
    error: str | None = None                # a reason known before training (config error)

    @property
    def name(self) -> str:
        return f"{self.expid}_seed{self.seed}"


@dataclass
class Comparison:
    """What :func:`compare` did: the runs, the rows it wrote, and where."""

    runs: list[PlannedRun]
    rows: list[dict]
    out_dir: str
    trained: int = 0
    reused: int = 0
    outputs: list[str] = field(default_factory=list)
    kept: str | None = None                 # why the existing tables were not replaced


# ---------------------------------------------------------------------- planning
def plan_runs(config_dir: str, dataset_id: str, expids: list[str], num_seeds: int,
              out_dir: str) -> list[PlannedRun]:
    """``expids x num_seeds`` runs; a config error, or an expid evaluated on another valid
    split than ``dataset_id``'s, is the run's failure.

    Expids of other dataset ids that share ``dataset_id``'s valid split (e.g. the same rows
    with a richer item table) are compared with it: their AUCs are on the same rows.
    Synthetic data is generated here, once per dataset, before any run starts: runs in
    parallel processes must not generate the same folder at the same time.
    """
    from fuxictr_mmctr.pipeline.config_check import dataset_params
    from fuxictr_mmctr.pipeline.datasets import ensure_dataset
    from fuxictr_mmctr.pipeline.experiment import load_params

    valid_split = os.path.normpath(str(dataset_params(config_dir, dataset_id).get("valid_data")))
    runs_dir = os.path.join(out_dir, "runs")
    runs, data_ready = [], set()
    for expid in expids:
        try:
            params = load_params(config_dir, expid)
            base_seed = int(params.get("seed", 2025))
            if os.path.normpath(str(params.get("valid_data"))) != valid_split:
                raise UserError(f"expid {expid} is evaluated on {params.get('valid_data')}, not "
                                f"on the valid split of {dataset_id} ({valid_split})")
            if params["dataset_id"] not in data_ready:
                ensure_dataset(params)
                data_ready.add(params["dataset_id"])
        except UserError as error:
            runs.append(_failed_plan(runs_dir, expid, 0, str(error)))
            continue
        for offset in range(num_seeds):
            seed = base_seed + offset
            run = PlannedRun(expid, seed, os.path.join(runs_dir, f"{expid}_seed{seed}.json"),
                             os.path.join(runs_dir, f"{expid}_seed{seed}.log"))
            try:
                params = load_params(config_dir, expid,
                                     overrides=run_record.seeded_overrides(expid, seed))
            except UserError as error:
                run.error = str(error)
                runs.append(run)
                continue
            run.expected_hash = run_record.config_hash(params)
            run.record = _reusable_record(run)
            runs.append(run)
    return runs


def _failed_plan(runs_dir: str, expid: str, seed: int, reason: str) -> PlannedRun:
    return PlannedRun(expid, seed, os.path.join(runs_dir, f"{expid}.json"),
                      os.path.join(runs_dir, f"{expid}.log"), error=reason)


def _reusable_record(run: PlannedRun) -> dict | None:
    """The recorded result of ``run`` when it finished with the same config and data."""
    if run.error or not os.path.exists(run.record_path):
        return None
    try:
        with open(run.record_path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None  # unreadable: train it again
    if record.get("status") == "ok" and record.get("config_hash") == run.expected_hash:
        return record
    return None


# ---------------------------------------------------------------------- running
def run_all(runs: list[PlannedRun], config_dir: str, devices: list[int],
            progress=None) -> int:
    """Train every run without a record, at most one per entry of ``devices`` at a time
    (``-1`` = a CPU slot; several CPU slots share the cores between them). Returns how many
    runs were trained. ``progress``: a tqdm-like object advanced once per finished run."""
    pending = [run for run in runs if run.record is None and run.error is None]
    started = len(pending)
    free = list(devices)
    running: dict = {}
    cpu_slots = sum(1 for device in devices if device < 0)
    try:
        while pending or running:
            while pending and free:
                device = free.pop(0)
                run = pending.pop(0)
                running[device_key(device, running)] = (_start(run, config_dir, device,
                                                               cpu_slots), run, device)
            time.sleep(POLL_SECONDS if running else 0)
            for key, (process, run, device) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[key]
                free.append(device)
                _finish(run, process)
                if progress is not None:
                    progress.set_postfix_str(f"{run.name}: {_short_status(run)}", refresh=False)
                    progress.update(1)
    finally:
        for process, _, _ in running.values():  # interrupted: stop the children too
            process.kill()
            process.wait()
    return started


def device_key(device: int, running: dict) -> tuple[int, int]:
    """A key unique among running slots (CPU slots repeat the device -1)."""
    index = 0
    while (device, index) in running:
        index += 1
    return device, index


def _start(run: PlannedRun, config_dir: str, device: int, cpu_slots: int):
    """Start the run's process; its output goes to the run's log file."""
    os.makedirs(os.path.dirname(run.record_path), exist_ok=True)
    if os.path.exists(run.record_path):
        os.remove(run.record_path)  # a stale record must not pass for this run's
    env = dict(os.environ)
    # The child imports this package from where this process did, installed or not.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    if device < 0 and cpu_slots > 1:  # share the cores, do not oversubscribe them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
    command = [sys.executable, "-m", "fuxictr_mmctr.pipeline.run_record", "--config",
               config_dir, "--expid", run.expid, "--seed", str(run.seed), "--gpu", str(device),
               "--out", run.record_path]
    log = open(run.log_path, "w", encoding="utf-8")
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent(os.getpid()))
    finally:
        log.close()  # the child holds its own copy


def _finish(run: PlannedRun, process) -> None:
    """Read the finished run's record, or record its failure with the reason from its log."""
    if process.returncode == 0 and os.path.exists(run.record_path):
        with open(run.record_path, encoding="utf-8") as handle:
            run.record = json.load(handle)
        return
    reason = failure_reason(run.log_path, process.returncode)
    run.record = {"status": "failed", "expid": run.expid, "seed": run.seed, "reason": reason}
    write_text_atomic(run.record_path, json.dumps(run.record, indent=2) + "\n")


def failure_reason(log_path: str, returncode: int) -> str:
    """One line: the run's ``error: ...`` line, else its last line, else the exit status."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle.read().replace("\r", "\n").splitlines()
                     if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    if returncode is not None and returncode < 0:
        return f"killed by signal {-returncode}" + (f" (last output: {lines[-1]})" if lines
                                                    else "")
    if lines:
        return f"exit status {returncode}: {lines[-1]}"
    return f"exit status {returncode}, no output"


def _short_status(run: PlannedRun) -> str:
    record = run.record or {}
    if record.get("status") == "ok":
        return f"AUC {record['valid']['AUC']:.4f}"
    return "failed"


# ---------------------------------------------------------------------- the table
def summarise(runs: list[PlannedRun]) -> list[dict]:
    """One row per expid (in the order given): mean and std over its finished seeds."""
    rows = []
    for expid in dict.fromkeys(run.expid for run in runs):
        mine = [run for run in runs if run.expid == expid]
        done = [run.record for run in mine if run.record and run.record.get("status") == "ok"]
        failed = [run for run in mine if not (run.record and run.record.get("status") == "ok")]
        reasons = [run.error or (run.record or {}).get("reason", "not run") for run in failed]
        status = "ok" if not failed else ("failed" if not done else "partial")
        if not done and reasons and all(reason == NOT_RUN for reason in reasons):
            status = NOT_RUN
        row = {"expid": expid, "seeds": len(mine), "seeds_ok": len(done), "status": status,
               "reason": "; ".join(dict.fromkeys(reasons))}
        if done:
            row.update(_metric_columns(done))
        rows.append(row)
    return rows


def _metric_columns(records: list[dict]) -> dict:
    """Means and stds of the metrics of finished ``records``, and their cost figures."""
    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), std

    columns = {"model": records[0].get("model")}
    for name, values in (("valid_auc", [r["valid"].get("AUC") for r in records]),
                         ("gauc", [r["valid"].get("gAUC") for r in records]),
                         ("logloss", [r["valid"].get("logloss") for r in records]),
                         ("test_auc", [r.get("test_auc") for r in records])):
        columns[f"{name}_mean"], columns[f"{name}_std"] = stats(values)
    oracle = records[0].get("oracle_auc")
    columns["oracle_auc"] = oracle
    columns["gap_to_oracle"] = (oracle - columns["valid_auc_mean"] if oracle is not None
                                else None)
    columns["parameters"] = records[0].get("parameters")
    for name in ("samples_per_second", "epoch_seconds", "peak_gpu_mb"):
        columns[name] = stats([r.get(name) for r in records])[0]
    # Records from before the peak was read per process image carry the starting process's
    # peak: not this run's, so not shown.
    columns["peak_host_mb"] = stats([r.get("peak_host_mb") for r in records
                                     if r.get("peak_host_mb_source") == run_record.PEAK_SOURCE])[0]
    columns["device"] = "; ".join(dict.fromkeys(str(r.get("device")) for r in records))
    columns.update(_row_analysis_columns(records))
    return columns


def _row_analysis_columns(records: list[dict]) -> dict:
    """``bootstrap`` (the seed mean of the records' ``valid_bootstrap`` AUCs, ``(R,)``),
    ``bootstrap_split`` (its ``(users, rows)``), ``slices`` (``{kind: {bucket: mean AUC}}``)
    and ``slice_rows`` (``{kind: {bucket: rows}}``), each ``None`` unless every record holds
    it (records from before they were recorded hold neither)."""
    columns = dict.fromkeys(("bootstrap", "bootstrap_split", "slices", "slice_rows"))
    vectors = [row_analysis.bootstrap_vector(r.get("valid_bootstrap")) for r in records]
    if all(vector is not None for vector in vectors):
        splits = {(r["valid_bootstrap"].get("users"), r["valid_bootstrap"].get("rows"))
                  for r in records}
        if len(splits) == 1:
            columns["bootstrap"], columns["bootstrap_split"] = np.mean(vectors, axis=0), *splits
    slices = [r.get("valid_slices") for r in records]
    if all(isinstance(item, dict) and item.get("version") == row_analysis.SLICES_VERSION
           for item in slices):
        columns["slices"] = _mean_slices(slices)
        columns["slice_rows"] = {kind: {name: cell.get("rows")
                                        for name, cell in slices[0].get(kind, {}).items()}
                                 for kind in row_analysis.SLICE_KINDS}
    return columns


def _mean_slices(slices: list[dict]) -> dict:
    """``{kind: {bucket: mean over the records of the bucket's AUC (None where none has
    one)}}`` of several records' ``valid_slices``."""
    means = {}
    for kind in row_analysis.SLICE_KINDS:
        buckets = dict.fromkeys(name for item in slices for name in item.get(kind, {}))
        means[kind] = {}
        for name in buckets:
            values = [item[kind][name]["auc"] for item in slices
                      if item.get(kind, {}).get(name, {}).get("auc") is not None]
            means[kind][name] = float(np.mean(values)) if values else None
    return means


# ---------------------------------------------------------------------- training-free rows
def heuristic_rows(data, test_labels=None, oracle_auc=None) -> list[dict]:
    """One table row per training-free baseline (:data:`.row_analysis.HEURISTICS`) on the
    valid split of ``data`` (a :class:`.row_analysis.DatasetRows`).

    Each row has the valid AUC and gAUC, the test AUC where ``test_labels (N_test,)`` are given
    (or the folder's test split has both classes), ``gap_to_oracle``, the bootstrap vector
    and the slice AUCs; no logloss (the scores are not probabilities), seeds nor cost.
    """
    from fuxictr_mmctr.training.metrics import auc, gauc

    valid = data.split("valid")
    if valid.label is None:
        raise UserError(f"{valid.path}: no label column; the valid split needs one")
    slices = data.slices("valid")
    valid_scores = data.heuristic_scores("valid")
    test_scores, test_labels = _heuristic_test(data, test_labels)
    rows = []
    for name in row_analysis.HEURISTICS:
        scores = valid_scores[name]
        valid_auc = auc(valid.label, scores)
        sliced = row_analysis.slice_aucs(valid.label, scores, slices)
        rows.append({
            "expid": f"{HEURISTIC_MODEL}_{name}", "model": HEURISTIC_MODEL, "status": "ok",
            "training_free": True, "seeds": None, "seeds_ok": None, "reason": "",
            "valid_auc_mean": valid_auc, "gauc_mean": gauc(valid.label, scores, valid.user_id),
            "test_auc_mean": (auc(test_labels, test_scores[name])
                              if test_scores is not None else None),
            "oracle_auc": oracle_auc,
            "gap_to_oracle": oracle_auc - valid_auc if oracle_auc is not None else None,
            "bootstrap": np.round(row_analysis.bootstrap_aucs(valid.label, scores,
                                                              valid.user_id), 6),
            "bootstrap_split": (int(np.unique(valid.user_id).size), len(valid)),
            "slices": {kind: {bucket: cell["auc"] for bucket, cell in buckets.items()}
                       for kind, buckets in sliced.items()},
            "slice_rows": row_analysis.slice_counts(slices),
        })
    return rows


def _heuristic_test(data, test_labels):
    """``(scores {name: (N_test,)}, labels (N_test,))`` of the folder's test split, labelled
    by ``test_labels`` (the synthetic truth) or by its own label column; ``(None, None)`` when
    there is no test split or no two classes to score."""
    if not os.path.exists(os.path.join(data.folder, contract.split_file("test"))):
        return None, None
    test = data.split("test")
    labels = test_labels if test_labels is not None else test.label
    if labels is None or len(labels) != len(test) or np.unique(labels).size < 2:
        return None, None
    return data.heuristic_scores("test"), np.asarray(labels)


def dataset_rows(config_dir: str, dataset_id: str):
    """``(DatasetRows, test labels or None)`` of ``dataset_id``'s folder; ``(None, None)``
    when the train or valid split its config names is not there, or is not the folder's
    ``train.parquet`` / ``valid.parquet`` (the folder is what the analysis reads)."""
    from fuxictr_mmctr.data.schema import split_file
    from fuxictr_mmctr.pipeline.config_check import dataset_params
    from fuxictr_mmctr.pipeline.datasets import dataset_folder, synthetic_test_labels

    params = dataset_params(config_dir, dataset_id)
    folder = dataset_folder(params)
    for split in ("train", "valid"):
        path = str(params.get(f"{split}_data"))
        if (not os.path.isfile(path)
                or os.path.abspath(path) != os.path.join(folder, split_file(split))):
            return None, None
    try:
        test_labels = synthetic_test_labels(params)
    except UserError:
        test_labels = None  # an unusable truth file costs the test AUC only
    return row_analysis.DatasetRows(folder), test_labels


# ---------------------------------------------------------------------- significance
def add_significance(rows: list[dict]) -> None:
    """Set ``diff_to_best``, ``diff_low``, ``diff_high``, ``p_value`` and ``significance`` of
    the rows that hold a ``bootstrap`` vector, against the best trained row (the first row of
    highest ``valid_auc_mean`` that is not training-free).

    ``diff_to_best`` is the row's ``valid_auc_mean`` minus the best's; the interval and
    p-value are those of the per-resample differences of the two bootstrap vectors
    (:func:`.row_analysis.paired_difference`). ``significance`` is ``best`` for the best row,
    ``*`` where the 95% interval excludes 0 and ``≈`` where it does not. Nothing is set when
    the best row has no bootstrap vector, nor on rows bootstrapped on another split.
    """
    trained = [row for row in rows if row.get("valid_auc_mean") is not None
               and not row.get("training_free")]
    if not trained:
        return
    best = max(trained, key=lambda row: row["valid_auc_mean"])
    if best.get("bootstrap") is None:
        return
    best["significance"] = BEST_MARK
    for row in rows:
        if (row is best or row.get("bootstrap") is None or row.get("valid_auc_mean") is None
                or row.get("bootstrap_split") != best.get("bootstrap_split")):
            continue
        test = row_analysis.paired_difference(row["bootstrap"], best["bootstrap"])
        row.update(diff_to_best=row["valid_auc_mean"] - best["valid_auc_mean"],
                   diff_low=test["low"], diff_high=test["high"], p_value=test["p_value"],
                   significance=(SIGNIFICANT_MARK if test["significant"]
                                 else NOT_SIGNIFICANT_MARK))


def sort_rows(rows: list[dict]) -> list[dict]:
    """Best valid AUC first; failed rows last."""
    return sorted(rows, key=lambda row: (row.get("valid_auc_mean") is None,
                                         -(row.get("valid_auc_mean") or 0.0)))


def table_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if not math.isnan(value) else ""
    return value


def table_markdown(rows: list[dict], dataset_id: str, oracle: dict | None,
                   machine: str, notes: list[str] = ()) -> str:
    """The comparison as a Markdown table, with the machine, the oracle lines and ``notes``
    above it."""
    lines = [f"# Model comparison on {dataset_id}", "",
             f"Machine: {machine}. Valid AUC, gAUC and logloss: mean ± std over seeds; "
             "samples/s and s/epoch: training throughput, the per-epoch validation included; "
             "peak memory: the run's process (host RSS, and GPU when on one).", "",
             "vs best: the row's valid AUC minus the best trained row's; `*` where the 95% "
             "interval of the paired bootstrap over valid users (1,000 resamples, the same for "
             "every row) excludes 0, `≈` where it does not (interval and p-value in "
             "comparison.csv); `—` where the runs recorded no bootstrap. Rows of model "
             f"`{HEURISTIC_MODEL}` (seeds: training-free) score the valid rows from the "
             "dataset folder alone, without training. Per-slice AUCs: comparison_slices.md.",
             ""]
    for note in notes:
        lines += [note, ""]
    if oracle:
        lines += [f"Oracle valid AUC (the true click probabilities): {oracle['oracle']:.4f}; "
                  + ", ".join(f"without {part}: {value:.4f}"
                              for part, value in oracle["partial"].items()), ""]
    lines += ["| expid | valid AUC | vs best | gAUC | logloss | test AUC | gap to oracle "
              "| parameters | samples/s | s/epoch | peak MB | seeds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("valid_auc_mean") is None:
            shown = NOT_RUN if row["status"] == NOT_RUN else f"failed: {row['reason']}"
            lines.append(f"| {row['expid']} | {shown} |  |  |  |  |  |  |  |  |  "
                         f"| 0/{row['seeds']} |")
            continue
        if row.get("training_free"):
            lines.append(
                f"| {row['expid']} | {_pm(row, 'valid_auc')} | {_vs_best(row)} "
                f"| {_pm(row, 'gauc')} |  | {_pm(row, 'test_auc')} "
                f"| {_fmt(row.get('gap_to_oracle'), '.4f')} |  |  |  |  | training-free |")
            continue
        peak = row.get("peak_gpu_mb") or row.get("peak_host_mb")
        lines.append(
            f"| {row['expid']} | {_pm(row, 'valid_auc')} | {_vs_best(row)} "
            f"| {_pm(row, 'gauc')} | {_pm(row, 'logloss')} | {_pm(row, 'test_auc')} "
            f"| {_fmt(row.get('gap_to_oracle'), '.4f')} | {_fmt(row.get('parameters'), ',')} "
            f"| {_fmt(row.get('samples_per_second'), ',.0f')} "
            f"| {_seconds(row.get('epoch_seconds'))} | {_fmt(peak, ',.0f')} "
            f"| {row['seeds_ok']}/{row['seeds']}"
            + (f" ({row['reason']})" if row.get("reason") else "") + " |")
    return "\n".join(lines) + "\n"


def _vs_best(row: dict) -> str:
    """``best``, ``-0.0012 *``, ``-0.0003 ≈`` or ``—`` (see :func:`add_significance`)."""
    if row.get("significance") == BEST_MARK:
        return BEST_MARK
    if row.get("significance") is None:
        return "—"
    return f"{row['diff_to_best']:+.4f} {row['significance']}"


def _pm(row: dict, name: str) -> str:
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if mean is None:
        return "NA"
    return f"{mean:.4f} ± {std:.4f}" if (row.get("seeds_ok") or 0) > 1 else f"{mean:.4f}"


def _seconds(value) -> str:
    if value is None:
        return "NA"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def _fmt(value, spec: str) -> str:
    return "NA" if value is None else format(value, spec)


# ---------------------------------------------------------------------- the slices table
#: How the slices table heads each slice kind's buckets.
SLICE_HEADINGS = {"history_length": "hist {}", "popularity": "{}"}


def bucket_counts(rows: list[dict], data=None) -> dict:
    """``{kind: {bucket: valid rows}}``: from the dataset folder (``data``, a
    :class:`.row_analysis.DatasetRows`) when given, else from the first row that recorded its
    slices; ``{}`` when neither has them."""
    if data is not None:
        return row_analysis.slice_counts(data.slices("valid"))
    recorded = next((row["slice_rows"] for row in rows if row.get("slice_rows")), None)
    return recorded or {}


def _slice_keys(counts: dict) -> list[tuple[str, str]]:
    """``[(kind, bucket), ...]`` in table order."""
    return [(kind, bucket) for kind in row_analysis.SLICE_KINDS
            for bucket in counts.get(kind, {})]


def _slice_auc(row: dict, kind: str, bucket: str):
    return ((row.get("slices") or {}).get(kind) or {}).get(bucket)


def slices_csv(rows: list[dict], counts: dict) -> str:
    """``comparison_slices.csv``: ``expid, model, seeds_ok, valid_auc_mean`` and one column
    ``<kind>:<bucket>`` per bucket (mean valid AUC over seeds); the first row, expid
    ``(rows)``, holds each bucket's valid row count. Rows: the finished ones of ``rows``."""
    keys = _slice_keys(counts)
    names = ["expid", "model", "seeds_ok", "valid_auc_mean"] + [f"{k}:{b}" for k, b in keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    writer.writerow(["(rows)", "", "", ""] + [counts[k][b] for k, b in keys])
    for row in rows:
        if row.get("valid_auc_mean") is None:
            continue
        writer.writerow([row["expid"], row.get("model") or "", _csv_value(row.get("seeds_ok")),
                         _csv_value(row["valid_auc_mean"])]
                        + [_csv_value(_slice_auc(row, k, b)) for k, b in keys])
    return buffer.getvalue()


def slices_markdown(rows: list[dict], counts: dict, dataset_id: str) -> str:
    """``comparison_slices.md``: the valid AUC of each finished row per bucket, the buckets'
    row counts in the header."""
    keys = _slice_keys(counts)
    lines = [f"# Valid AUC per slice on {dataset_id}", "",
             "Each cell is the AUC on the valid rows of one bucket, mean over seeds (n: the "
             "bucket's rows). hist: real item ids in the row's item_seq. Target popularity: "
             "`cold` never in a user's train item set (neither a positive train target nor in "
             "any train history), `head` the most popular items that together hold half of the "
             "train occurrences, `tail` the rest; popularity counts the users whose train item "
             "set holds the item (fuxictr_mmctr/pipeline/row_analysis.py). `—`: a bucket with "
             f"one class, or runs recorded before slices were. Model `{HEURISTIC_MODEL}`: "
             "training-free.", ""]
    if not keys:
        lines += ["No slices: neither the dataset folder nor the records hold them.", ""]
    headings = [SLICE_HEADINGS[k].format(b) + f" (n={counts[k][b]:,})" for k, b in keys]
    lines += ["| expid | valid AUC | " + " | ".join(headings) + " |",
              "|---|---|" + "---|" * len(keys)]
    for row in rows:
        if row.get("valid_auc_mean") is None:
            continue
        cells = [_fmt(_slice_auc(row, k, b), ".4f").replace("NA", "—") for k, b in keys]
        lines.append(f"| {row['expid']} | {row['valid_auc_mean']:.4f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def oracle_lines(config_dir: str, dataset_id: str) -> dict | None:
    """``{"oracle": AUC, "partial": {part: AUC}}`` of the dataset's valid split (synthetic
    data, from its ``oracle.json``), else None."""
    from fuxictr_mmctr.pipeline.config_check import dataset_params
    from fuxictr_mmctr.pipeline.datasets import oracle_report

    report = oracle_report(dataset_params(config_dir, dataset_id))
    if report is None:
        return None
    partial = {name.removeprefix("no_"): aucs["valid"]
               for name, aucs in report.get("partial_oracle_auc", {}).items()}
    return {"oracle": report["oracle_auc"]["valid"], "partial": partial}


# ---------------------------------------------------------------------- the whole job
#: The reason a run without a record gets under ``train=False``.
NOT_RUN = "not run"


def compare(config_dir: str, dataset_id: str, expids: list[str], num_seeds: int = 1,
            devices=(-1,), out_dir: str | None = None, progress: bool = True,
            train: bool = True) -> Comparison:
    """Plan, run what is missing, and write the six outputs (see the module docstring).

    ``train=False`` trains nothing: the tables show the recorded runs, and each missing one
    counts as a seed not run.
    """
    from tqdm import tqdm

    from fuxictr_mmctr.pipeline.comparison_chart import draw_comparison, draw_slices

    if not expids:
        raise UserError("no expids to compare")
    if num_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {num_seeds}")
    devices = list(devices) or [-1]
    _check_devices(devices)
    out_dir = out_dir or os.path.join("benchmarks", "results", dataset_id)
    check_expids(config_dir, dataset_id, expids)
    runs = plan_runs(config_dir, dataset_id, expids, num_seeds, out_dir)
    if not train:
        for run in runs:
            if run.record is None and run.error is None:
                run.error = NOT_RUN
    to_train = sum(1 for run in runs if run.record is None and run.error is None)
    reused = sum(1 for run in runs if run.record is not None)
    bar = tqdm(total=len(runs), initial=len(runs) - to_train, desc="runs", unit="run",
               file=sys.stdout, disable=not progress)
    try:
        run_all(runs, config_dir, devices, bar)
    finally:
        bar.close()
    rows = summarise(runs)
    oracle = oracle_lines(config_dir, dataset_id)
    data, notes = None, []
    try:
        data, test_labels = dataset_rows(config_dir, dataset_id)
        if data is not None:
            rows += heuristic_rows(data, test_labels, oracle["oracle"] if oracle else None)
    except UserError as error:
        notes.append(f"Training-free rows: not computed ({error}).")
        data = None
    rows = sort_rows(rows)
    add_significance(rows)
    machine = _machine(runs, devices)
    counts = bucket_counts(rows, data)
    outputs = [os.path.join(out_dir, f"{name}.{ext}") for name in ("comparison",
                                                                    "comparison_slices")
               for ext in ("csv", "md", "png")]
    lost = rows_that_would_fail(outputs[0], rows)
    if lost:
        return Comparison(runs=runs, rows=rows, out_dir=out_dir, trained=to_train,
                          reused=reused, kept=(
                              f"kept {outputs[0]} and the other tables: "
                              + ", ".join(lost) + " succeeded there and failed now (the "
                              "failed runs' records and logs are in runs/)"))
    write_text_atomic(outputs[0], table_csv(rows))
    write_text_atomic(outputs[1], table_markdown(rows, dataset_id, oracle, machine, notes))
    draw_comparison([row for row in rows if not row.get("training_free")], outputs[2],
                    dataset_id, oracle, machine)
    write_text_atomic(outputs[3], slices_csv(rows, counts))
    write_text_atomic(outputs[4], slices_markdown(rows, counts, dataset_id))
    draw_slices(rows, counts, outputs[5], dataset_id)
    return Comparison(runs=runs, rows=rows, out_dir=out_dir, trained=to_train, reused=reused,
                      outputs=outputs)


def check_expids(config_dir: str, dataset_id: str, expids: list[str]) -> None:
    """Every expid exists and is evaluated on ``dataset_id``'s valid split: a usage error
    (one line) before anything runs or is written, never a table of failed rows."""
    from fuxictr_mmctr.errors import did_you_mean
    from fuxictr_mmctr.pipeline.config_check import dataset_params, expids_in, load_params

    known = expids_in(config_dir)
    valid_split = os.path.normpath(str(dataset_params(config_dir, dataset_id).get("valid_data")))
    for expid in expids:
        if expid not in known:
            raise UserError(f"expid {expid} is not in {config_dir}{did_you_mean(expid, known)}")
        params = load_params(config_dir, expid)
        if os.path.normpath(str(params.get("valid_data"))) != valid_split:
            raise UserError(f"expid {expid} is evaluated on {params.get('valid_data')}, not on "
                            f"the valid split of {dataset_id} ({valid_split}); compare it with "
                            f"--dataset {params.get('dataset_id')}")


def rows_that_would_fail(csv_path: str, rows: list[dict]) -> list[str]:
    """Expids whose row in the existing ``csv_path`` finished (``ok``) and whose new row has
    no result (failed): writing the new tables would replace results with failures."""
    try:
        with open(csv_path, encoding="utf-8") as handle:
            before = {row["expid"]: row.get("status") for row in csv.DictReader(handle)}
    except (OSError, KeyError, csv.Error):
        return []
    return [row["expid"] for row in rows
            if before.get(row["expid"]) == "ok" and row.get("valid_auc_mean") is None
            and row["status"] != NOT_RUN]


def _device_text(record: dict) -> str:
    """A run's device; on a CPU with the threads it used (CPU slots share the cores)."""
    if record.get("peak_gpu_mb") is None and record.get("threads"):
        threads = int(record["threads"])
        return f"{record['device']} ({threads} thread{'s' if threads != 1 else ''} per run)"
    return str(record["device"])


def _check_devices(devices: list[int]) -> None:
    """Every listed GPU exists (a missing one is an error, never a silent CPU run)."""
    from fuxictr_mmctr.training.devices import resolve_device

    for device in dict.fromkeys(devices):
        resolve_device(device)


def _machine(runs: list[PlannedRun], devices: list[int]) -> str:
    """The devices the recorded runs report, else this machine's."""
    import torch

    names = [_device_text(run.record) for run in runs
             if run.record and run.record.get("status") == "ok" and run.record.get("device")]
    names = list(dict.fromkeys(names)) or [run_record.device_name(d) for d in dict.fromkeys(devices)]
    return "; ".join(names) + f"; torch {torch.__version__}"
