"""Hyperparameter grids with ``fuxictr.autotuner``, with dataset-level keys made to work.

fuxictr 2.3.10's ``enumerate_params`` fails on a grid over a dataset-level key: it reuses one
parameter dict for every dataset combination and deletes its ``model_id`` twice (KeyError); with
``rebuild_dataset: False`` (our configs: the loader caches its own arrays) it would also key every
combination by the same dataset_id. So we expand the dataset-level part of the grid here, give
each combination its own dataset_id (``<id>_<hash>``), let the autotuner expand the model-level
part for each, and merge the results into the folder the autotuner would have written.

The grid itself is run by ``autotuner.grid_search`` (one ``run_expid.py`` process per listed
device at a time), which drops every run's exit status. While it runs, :class:`_RunWatcher`
stands in for the ``subprocess`` module it uses: each run is started with this Python (not
whatever ``python`` is first on PATH), with the arguments kept whole (a config path with spaces
works), its stderr passed through while its last line is kept, and its exit status recorded.
:func:`run_grid` returns a :class:`GridReport` of every run.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field

import yaml

from fuxictr_mmctr.errors import EXIT_USAGE, UserError
from fuxictr_mmctr.fileio import write_text_atomic


def read_tuner_config(config_file: str) -> dict:
    """The tuner yaml as a dict, its shape checked: every problem is one line naming the file
    (and the line, for YAML syntax errors)."""
    if not os.path.exists(config_file):
        raise UserError(f"tuner config {config_file} not found")
    if os.path.isdir(config_file):
        raise UserError(f"tuner config {config_file}: is a folder; give the tuner yaml file")
    if not os.path.isfile(config_file):  # a pipe would block the read forever
        raise UserError(f"tuner config {config_file}: is not a regular file")
    try:
        with open(config_file, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise UserError(f"{_yaml_where(config_file, error)}: not valid YAML "
                        f"({getattr(error, 'problem', None) or error})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{config_file}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise UserError(f"{config_file}: cannot read ({error.strerror})") from None
    if config is None:
        raise UserError(f"{config_file}: the file is empty; it needs base_expid and tuner_space")
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a mapping with base_expid and tuner_space, "
                        f"got a {type(config).__name__}")
    _check_tuner_keys(config_file, config)
    return config


def _yaml_where(config_file: str, error: yaml.YAMLError) -> str:
    """``file, line N`` of a YAML error (its problem mark, 1-based), or just the file."""
    mark = getattr(error, "problem_mark", None)
    return f"{config_file}, line {mark.line + 1}" if mark is not None else config_file


def _check_tuner_keys(config_file: str, config: dict) -> None:
    """Types of the keys this module reads; an empty list in the grid is an error too (it
    would make a grid of no runs)."""
    for key in ("base_expid", "tuner_space"):
        if key not in config:
            raise UserError(f"{config_file}: missing key {key!r}")
    if not isinstance(config["base_expid"], str):
        raise UserError(f"{config_file}: base_expid must be an expid name, got "
                        f"{config['base_expid']!r}")
    space = config["tuner_space"]
    if space is not None and not isinstance(space, dict):
        raise UserError(f"{config_file}: tuner_space must be a mapping of parameter: [values], "
                        f"got a {type(space).__name__}")
    for key, values in (space or {}).items():
        if values == []:
            raise UserError(f"{config_file}: tuner_space.{key} is an empty list; give at least "
                            f"one value")
    for key in ("base_config", "dataset_id"):
        if key in config and not isinstance(config[key], str):
            raise UserError(f"{config_file}: {key} must be a string, got {config[key]!r}")
    for key in ("model_config", "dataset_config"):
        if key in config and not isinstance(config[key], dict):
            raise UserError(f"{config_file}: {key} must be a mapping, got "
                            f"{type(config[key]).__name__}")


def _as_list(value):
    return value if isinstance(value, list) else [value]


def base_configs(config_file: str, config: dict):
    """The base expid's merged model params and its dataset params."""
    from fuxictr.utils import load_dataset_config, load_model_config

    base_dir = os.path.abspath(config.get("base_config", os.path.dirname(config_file)))
    expid = config["base_expid"]
    if not config.get("model_config", {}).get(expid) and not os.path.isdir(base_dir):
        raise UserError(f"{config_file}: base_config folder {base_dir} not found")
    try:
        model_params = config.get("model_config", {}).get(expid) or load_model_config(base_dir, expid)
    except (AssertionError, RuntimeError):
        raise UserError(f"{config_file}: base_expid {expid} not found in {base_dir}") from None
    if "dataset_id" not in config and "dataset_id" not in model_params:
        raise UserError(f"{config_file}: base_expid {expid} has no dataset_id; set dataset_id "
                        f"in the tuner config")
    dataset_id = config.get("dataset_id", model_params.get("dataset_id"))
    try:
        dataset_params = (config.get("dataset_config", {}).get(dataset_id)
                          or load_dataset_config(base_dir, dataset_id))
    except RuntimeError:
        raise UserError(f"{config_file}: dataset_id {dataset_id} not found in {base_dir}") from None
    dataset_params = {k: v for k, v in dataset_params.items() if k != "dataset_id"}
    return expid, model_params, dataset_id, dataset_params


def _dataset_grid(dataset_id: str, dataset_params: dict, dataset_space: dict) -> dict:
    """dataset_id -> params for every combination of the dataset-level keys."""
    keys = sorted(dataset_space)
    grid = {}
    for values in itertools.product(*(_as_list(dataset_space[k]) for k in keys)):
        overrides = dict(zip(keys, values))
        params = {**dataset_params, **overrides, "rebuild_dataset": False}
        params.setdefault("data_format", "parquet")
        if keys:
            digest = hashlib.md5(json.dumps(overrides, sort_keys=True, default=str).encode())
            grid_id = f"{dataset_id}_{digest.hexdigest()[:8]}"
            if SYNTHETIC_DATA_KEYS & set(keys) and params.get("synthetic_preset"):
                params = _own_data_folder(params, grid_id)
            grid[grid_id] = params
        else:
            grid[dataset_id] = params
    return grid


#: Dataset-level keys that change the files of a synthetic dataset.
SYNTHETIC_DATA_KEYS = {"synthetic_preset", "synthetic_seed"}
#: Keys holding the paths of a dataset's files.
DATA_PATH_KEYS = ("train_data", "valid_data", "test_data", "item_info")


def _own_data_folder(params: dict, grid_id: str) -> dict:
    """``params`` with its data files in a folder of their own, ``<data folder>/../<grid_id>/``.

    Two grid points with another synthetic seed or preset generate different files: in one
    shared folder each would regenerate over the other's data.
    """
    moved = dict(params)
    for key in DATA_PATH_KEYS:
        path = params.get(key)
        if path:
            parent = os.path.dirname(os.path.dirname(os.path.normpath(path)))
            moved[key] = os.path.join(parent, grid_id, os.path.basename(path))
    return moved


def expand_tuner_config(config_file: str) -> str:
    """Write the grid's ``dataset_config.yaml``/``model_config.yaml``; return their folder.

    The folder is ``config_file`` without ``.yaml`` (as fuxictr does).
    """
    config_file = os.path.abspath(config_file)
    config = read_tuner_config(config_file)
    return expand_space(config_file, config, config["tuner_space"] or {})


def expand_space(config_file: str, config: dict, space: dict) -> str:
    """:func:`expand_tuner_config` for ``config`` (the checked tuner yaml at the absolute path
    ``config_file``) with ``space`` as its grid."""
    from fuxictr import autotuner

    expid, model_params, dataset_id, dataset_params = base_configs(config_file, config)
    unknown = set(space) - set(model_params) - set(dataset_params)
    if unknown:
        raise UserError(f"{config_file}: tuner_space keys not in the base configs: {sorted(unknown)}")
    dataset_space = {k: v for k, v in space.items() if k in dataset_params and k not in model_params}
    model_space = {k: v for k, v in space.items() if k not in dataset_space}

    all_datasets, all_expids = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for grid_dataset_id, params in _dataset_grid(dataset_id, dataset_params, dataset_space).items():
            scratch_file = os.path.join(scratch, grid_dataset_id + ".yaml")
            with open(scratch_file, "w", encoding="utf-8") as handle:
                yaml.safe_dump({"base_expid": expid, "dataset_id": grid_dataset_id,
                                "tuner_space": model_space,
                                "model_config": {expid: {**model_params, "dataset_id": grid_dataset_id}},
                                "dataset_config": {grid_dataset_id: params}}, handle)
            generated = autotuner.enumerate_params(scratch_file)
            with open(os.path.join(generated, "dataset_config.yaml"), encoding="utf-8") as handle:
                all_datasets.update(yaml.safe_load(handle))
            with open(os.path.join(generated, "model_config.yaml"), encoding="utf-8") as handle:
                for name, model in yaml.safe_load(handle).items():
                    suffix = name.rsplit("_", 1)[-1]
                    all_expids[f"{expid}_{len(all_expids) + 1:03d}_{suffix}"] = model

    target_dir = config_file[: -len(".yaml")] if config_file.endswith(".yaml") else config_file + "_grid"
    write_text_atomic(os.path.join(target_dir, "dataset_config.yaml"),
                      yaml.safe_dump(all_datasets, default_flow_style=None, indent=4))
    write_text_atomic(os.path.join(target_dir, "model_config.yaml"),
                      yaml.safe_dump(all_expids, default_flow_style=None, indent=4))
    return target_dir


def prepare_grid_data(config_dir: str) -> list[str]:
    """Make every synthetic dataset the grid uses, once, before any run starts.

    The autotuner starts one ``run_expid.py`` per device at once: on a fresh clone each would
    generate the same synthetic dataset into the same folder at the same time. Returns the
    dataset folders.
    """
    from fuxictr_mmctr.pipeline.datasets import ensure_dataset

    with open(os.path.join(config_dir, "dataset_config.yaml"), encoding="utf-8") as handle:
        dataset_configs = yaml.safe_load(handle) or {}
    folders = []
    for dataset_id, params in dataset_configs.items():
        folders.append(ensure_dataset({"dataset_id": dataset_id, **params}))
    return folders


@dataclass
class GridRun:
    """One grid point's run: its expid, device, and (once finished) exit status and last
    stderr line."""

    expid: str
    gpu: str
    process: subprocess.Popen | None = None
    last_line: str = ""
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def returncode(self):
        return None if self.process is None else self.process.returncode

    @property
    def failed(self) -> bool:
        return self.returncode != 0

    def reason(self) -> str:
        """The run's failure in one line: its last stderr line, or how it ended."""
        if self.process is None:
            return "never started"
        if self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        return f"exit {self.returncode}: {self.last_line or '(no message on stderr)'}"


@dataclass
class GridReport:
    """Every grid point of a tuner config and how its run ended."""

    config_dir: str
    expids: list[str]
    runs: list[GridRun]

    def failures(self) -> list[GridRun]:
        """Runs that did not exit 0, and expids that never started, in grid order."""
        started = {run.expid for run in self.runs}
        never = [GridRun(expid, "-") for expid in self.expids if expid not in started]
        return [run for run in self.runs if run.failed] + never

    def exit_status(self) -> int:
        """0 when every point succeeded; 2 when every failure is a usage or configuration error
        (the run exited 2: one ``error:`` line); 1 otherwise (a crash, a kill, a run that never
        started)."""
        failures = self.failures()
        if not failures:
            return 0
        return EXIT_USAGE if all(run.returncode == EXIT_USAGE for run in failures) else 1

    def summary(self) -> str:
        """Lines for the user: what failed and why, or that every point finished."""
        failures = self.failures()
        if not failures:
            return f"tuner: all {len(self.expids)} grid points finished"
        lines = [f"tuner: {len(failures)} of {len(self.expids)} grid points failed:"]
        lines += [f"  {run.expid} (--gpu {run.gpu}): {run.reason()}" for run in failures]
        return "\n".join(lines)


def grid_expids(config_dir: str, tag: str | None = None) -> list[str]:
    """The expids of a generated grid in run order, those containing ``tag`` when given."""
    from fuxictr import autotuner

    every = autotuner.load_experiment_ids(config_dir)
    expids = every if tag is None else [expid for expid in every if str(tag) in expid]
    if not expids:
        raise UserError(f"--tag {tag}: matches none of the {len(every)} expids in "
                        f"{os.path.join(config_dir, 'model_config.yaml')}")
    return expids


class _RunWatcher:
    """Stands in for the ``subprocess`` module inside ``fuxictr.autotuner`` during a grid.

    ``grid_search`` launches ``python -u SCRIPT --config DIR --expid ID --gpu N`` split on
    spaces and keeps no exit status. Here each launch runs ``SCRIPT`` with this interpreter and
    the arguments kept whole, passes its stderr through to ours (byte for byte, progress bars
    included) while keeping the last line, and is recorded as a :class:`GridRun`.
    """

    def __init__(self, script: str, config_dir: str):
        self.script, self.config_dir = script, config_dir
        self.runs: list[GridRun] = []

    def Popen(self, args, **kwargs):  # noqa: N802 - the name grid_search calls
        if len(args) >= 4 and args[-4] == "--expid" and args[-2] == "--gpu":
            expid, gpu = args[-3], args[-1]
            command = [sys.executable, "-u", self.script, "--config", self.config_dir,
                       "--expid", expid, "--gpu", gpu]
        else:  # an autotuner that builds its command otherwise: run it as given
            expid, gpu = " ".join(args), "?"
            command = list(args)
            if command and command[0] == "python":
                command[0] = sys.executable
        run = GridRun(expid, gpu)
        run.process = subprocess.Popen(command, stderr=subprocess.PIPE, **kwargs)
        run.reader = threading.Thread(target=_pass_through, args=(run,), daemon=True)
        run.reader.start()
        self.runs.append(run)
        return run.process

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def finish(self) -> None:
        """Wait for every run and its stderr reader."""
        for run in self.runs:
            run.process.wait()
            run.reader.join()

    def stop(self) -> None:
        """Stop the runs still going (the grid was interrupted): no training outlives it."""
        for run in self.runs:
            if run.process.poll() is None:
                run.process.terminate()


def _pass_through(run: GridRun) -> None:
    """Copy a run's stderr to ours as it comes, keeping its last non-empty line."""
    stream, tail = run.process.stderr, b""
    out = getattr(sys.stderr, "buffer", None)
    while True:
        chunk = os.read(stream.fileno(), 1 << 16)
        if not chunk:
            break
        tail = (tail + chunk)[-8192:]
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            sys.stderr.write(chunk.decode("utf-8", "replace"))
    stream.close()
    lines = tail.decode("utf-8", "replace").replace("\r", "\n").splitlines()
    run.last_line = next((line.strip() for line in reversed(lines) if line.strip()), "")


@contextlib.contextmanager
def _watched_runs(script: str, config_dir: str):
    """Swap ``fuxictr.autotuner``'s ``subprocess`` for a :class:`_RunWatcher` for the block."""
    from fuxictr import autotuner

    watcher = _RunWatcher(script, config_dir)
    original = autotuner.subprocess
    autotuner.subprocess = watcher
    try:
        yield watcher
    except BaseException:
        watcher.stop()
        raise
    finally:
        autotuner.subprocess = original
        watcher.finish()


def run_grid(config_file: str, gpus: list[int], tag: str | None = None,
             script: str = "run_expid.py") -> GridReport:
    """Expand the grid, make its data, and run every expid, one process per listed device at
    a time; return how every run ended."""
    from fuxictr import autotuner

    config_dir = expand_tuner_config(config_file)
    expids = grid_expids(config_dir, tag)
    prepare_grid_data(config_dir)
    with _watched_runs(script, config_dir) as watcher:
        autotuner.grid_search(config_dir, gpus, tag, script=script)
    return GridReport(config_dir, expids, watcher.runs)
