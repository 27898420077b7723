"""A tuner file with ``search: {type: optuna}``: its plan, its study, its worker processes.

:func:`plan_search` checks the file (:mod:`.search_space` for the block) against the base expid
and writes the base expid's config folder (the tuner file without ``.yaml``, as a grid does);
:func:`open_study` opens the study in its storage: a journal file ``<tuner name>.optuna.log`` in
the working folder unless ``search.storage`` names another file or an RDB URL.
:func:`run_search` runs one worker in this process, or ``--workers K`` worker processes
(:mod:`.optuna_worker`: trials, pruning, abandoned trials), then writes the results
(:mod:`.optuna_report`). Because the study lives in the storage, rerunning the command
continues it, and the same command on other machines with the same storage joins it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import yaml

from fuxictr_mmctr.errors import UserError, did_you_mean, first_line
from fuxictr_mmctr.pipeline import search_space, tuner

#: Complete trials before the median pruner prunes anything.
PRUNER_STARTUP_TRIALS = 3
#: Intermediate values are reported at thousandths of an epoch (optuna steps are integers).
STEPS_PER_EPOCH = 1000
#: Direction of metrics that can be named in ``search.metric`` without ``direction``.
METRIC_DIRECTIONS = {"AUC": "maximize", "gAUC": "maximize", "logloss": "minimize"}


def import_optuna(config_file: str):
    """The optuna module, or the one-line error that says which extra installs it."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"{config_file}: search.type optuna needs the optuna package; install "
                        f"it with {search_space.INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class Objective:
    """What a trial is scored on: ``monitor`` (a metric name or FuxiCTR's ``{metric: weight}``)
    of the valid split, to ``direction``."""

    monitor: object
    direction: str

    @property
    def name(self) -> str:
        if isinstance(self.monitor, str):
            return self.monitor
        return " ".join(f"{weight:+g}*{metric}" for metric, weight in self.monitor.items())

    def value(self, logs: dict) -> float:
        from fuxictr.utils import Monitor

        return float(Monitor(kv=self.monitor).get_value(logs))


@dataclass(frozen=True)
class SearchPlan:
    """Everything a worker needs: the expanded base expid, the space, the settings."""

    config_file: str
    tuner_name: str
    config_dir: str
    expid: str
    base_params: dict
    fixed: dict
    sampled: dict
    settings: search_space.SearchSettings
    objective: Objective
    storage: str
    study_name: str
    results_dir: str

    def distributions(self, optuna) -> dict:
        """``{key: optuna distribution}`` of the sampled keys."""
        dists = {}
        for key, param in self.sampled.items():
            if isinstance(param, search_space.Choice):
                dists[key] = optuna.distributions.CategoricalDistribution(param.labels)
            elif param.kind == "int":
                dists[key] = optuna.distributions.IntDistribution(
                    param.low, param.high, log=param.log, step=int(param.step or 1))
            else:
                dists[key] = optuna.distributions.FloatDistribution(
                    param.low, param.high, log=param.log, step=param.step)
        return dists

    def base_trial(self) -> dict:
        """``{key: optuna value}`` of the base expid's own values of the sampled keys (the
        trial ``search.start_from_base`` puts first)."""
        return {key: param.label_of(self.base_params[key]) for key, param in self.sampled.items()}

    def values_of(self, trial_params: dict) -> dict:
        """The config values of a trial's ``params`` (categorical labels back to values)."""
        return {key: self.sampled[key].value_of(label) for key, label in trial_params.items()
                if key in self.sampled}

    def model_id(self, number: int) -> str:
        return f"{self.study_name}_trial{number:03d}"

    def output(self, suffix: str) -> str:
        """``<results folder>/<tuner name><suffix>``."""
        return os.path.join(self.results_dir, self.tuner_name + suffix)


def plan_search(config_file: str) -> SearchPlan:
    """Read and check an optuna tuner file and write its base expid's config folder."""
    config_file = os.path.abspath(config_file)
    config = tuner.read_tuner_config(config_file)
    if search_space.search_type(config_file, config) != "optuna":
        raise UserError(f"{config_file}: not an optuna search (search.type is grid)")
    import_optuna(config_file)
    settings = search_space.parse_search(config_file, config)
    fixed, sampled = search_space.split_space(config_file, config["tuner_space"])
    expid, model_params, dataset_id, dataset_params = tuner.base_configs(config_file, config)
    for key in sampled:
        if key not in model_params and key in dataset_params:
            raise UserError(f"{config_file}: tuner_space.{key} is a dataset-level key; an optuna "
                            f"search samples model-level keys (give {key} one value)")
    for key in list(fixed) + list(sampled):
        if key not in model_params and key not in dataset_params:
            raise UserError(f"{config_file}: tuner_space.{key} is not a key of {expid} or of "
                            f"dataset {dataset_id}"
                            f"{did_you_mean(key, list(model_params) + list(dataset_params))}")
    size = search_space.space_size(sampled)
    if size is not None and settings.trials > size:
        raise UserError(f"{config_file}: search.trials is {settings.trials}, but tuner_space "
                        f"holds only {size} parameter sets")
    objective = _objective(config_file, settings, {**model_params, **fixed})
    if settings.start_from_base:
        _check_base_in_space(config_file, expid, sampled, model_params)
    config_dir = tuner.expand_space(config_file, config, fixed)  # checked: now write
    [trial_expid] = tuner.grid_expids(config_dir)
    with open(os.path.join(config_dir, "model_config.yaml"), encoding="utf-8") as handle:
        base_params = yaml.safe_load(handle)[trial_expid]
    tuner_name = os.path.splitext(os.path.basename(config_file))[0]
    results_dir = os.getcwd()
    storage = settings.storage or os.path.join(results_dir, f"{tuner_name}.optuna.log")
    return SearchPlan(config_file, tuner_name, config_dir, trial_expid, base_params, fixed,
                      sampled, settings, objective, storage, settings.study or tuner_name,
                      results_dir)


def _check_base_in_space(config_file: str, expid: str, sampled: dict, base_params: dict) -> None:
    """``search.start_from_base`` needs each sampled key's base value inside its space."""
    for key, param in sampled.items():
        if param.label_of(base_params[key]) is None:
            space = (list(param.values) if isinstance(param, search_space.Choice)
                     else f"[{param.low}, {param.high}]")
            raise UserError(f"{config_file}: search.start_from_base: {expid}'s {key} is "
                            f"{base_params[key]!r}, outside tuner_space.{key} {space}; add it "
                            f"to the space or drop start_from_base")


def _objective(config_file: str, settings, base_params: dict) -> Objective:
    """The objective: ``search.metric`` (default: the expid's ``monitor``) and its direction
    (default: ``monitor_mode`` for the monitor, the metric's own for AUC, gAUC, logloss)."""
    from fuxictr.utils import Monitor

    monitor = base_params.get("monitor", "AUC")
    if settings.metric is None:
        mode = base_params.get("monitor_mode", "max")
        return Objective(monitor, settings.direction or
                         ("maximize" if mode == "max" else "minimize"))
    evaluated = list(Monitor(kv=monitor).get_metrics())
    if settings.metric not in evaluated:
        raise UserError(f"{config_file}: search.metric {settings.metric!r} is not computed at the "
                        f"evaluations during training (the expid's monitor needs "
                        f"{', '.join(evaluated)}); name one of those or leave metric out")
    direction = settings.direction or METRIC_DIRECTIONS.get(settings.metric)
    if direction is None:
        raise UserError(f"{config_file}: search.direction is needed with metric "
                        f"{settings.metric!r}: maximize or minimize")
    return Objective(settings.metric, direction)


def open_storage(plan: SearchPlan):
    """The optuna storage the plan names: a database URL, or a journal file in an existing folder."""
    optuna = import_optuna(plan.config_file)
    where = f"{plan.config_file}: search.storage"
    if "://" in plan.storage:
        try:
            return optuna.storages.RDBStorage(plan.storage)
        except Exception as error:  # a driver missing, a refused connection, a bad URL
            raise UserError(f"{where}: cannot open {plan.storage} "
                            f"({first_line(error)})") from None
    folder = os.path.dirname(os.path.abspath(plan.storage))
    if not os.path.isdir(folder):
        raise UserError(f"{where}: folder {folder} not found (the journal file "
                        f"{os.path.basename(plan.storage)} goes there)")
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(plan.storage))


def open_study(plan: SearchPlan, storage=None):
    """The plan's study in its storage (created on first use), with its sampler and pruner;
    ``storage`` is :func:`open_storage`'s, made here when not given."""
    optuna = import_optuna(plan.config_file)
    storage = open_storage(plan) if storage is None else storage
    study = optuna.create_study(storage=storage, study_name=plan.study_name,
                                sampler=make_sampler(optuna, plan.settings.sampler),
                                pruner=make_pruner(optuna, plan.settings),
                                direction=plan.objective.direction, load_if_exists=True)
    if study.direction.name.lower() != plan.objective.direction:
        raise UserError(f"{plan.config_file}: search.direction is {plan.objective.direction}, but "
                        f"study {plan.study_name} in {plan.storage} was made to "
                        f"{study.direction.name.lower()}; name another study")
    return study


def enqueue_base_trial(study, plan: SearchPlan) -> None:
    """Put the base expid's own values first in ``study`` (``search.start_from_base``), unless
    a trial of the study already holds them (a rerun continues the study)."""
    study.enqueue_trial(plan.base_trial(), skip_if_exists=True)


def make_sampler(optuna, name: str):
    """``tpe``: TPE with the constant liar (running trials count as bad for the proposals of
    concurrent workers); ``random``: uniform sampling."""
    if name == "tpe":
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()


def make_pruner(optuna, settings: search_space.SearchSettings):
    """``median``: prune a trial whose best value so far is worse than the median of the
    complete trials' values at the same step, once PRUNER_STARTUP_TRIALS have completed and the
    trial has trained ``prune_after_epochs`` epochs; ``none``."""
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER_STARTUP_TRIALS,
            n_warmup_steps=int(round(settings.prune_after_epochs * STEPS_PER_EPOCH)))
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------- the search
def run_search(config_file: str, gpus: list[int], workers: int | None = None) -> int:
    """Run the search of an optuna tuner file with ``workers`` processes (default: one per
    entry of ``gpus``; worker i uses ``gpus[i]``), then write the results. Returns the exit
    status: 0 once the study holds ``trials`` finished trials (or the timeout ended it), 1 when
    a worker stopped early."""
    from fuxictr_mmctr.pipeline import optuna_report

    workers = len(gpus) if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers > len(gpus):
        raise UserError(f"--workers {workers} needs {workers} device slots in --gpu, got "
                        f"{len(gpus)} (repeat -1 for CPU workers, e.g. --gpu -1 -1)")
    plan = plan_search(config_file)
    tuner.prepare_grid_data(plan.config_dir)  # once, before the workers start
    study = open_study(plan)
    if plan.settings.start_from_base:
        enqueue_base_trial(study, plan)
    deadline = (time.time() + 60 * plan.settings.timeout_minutes
                if plan.settings.timeout_minutes else None)
    status = 0
    try:
        if workers == 1:
            from fuxictr_mmctr.pipeline.optuna_worker import run_worker

            run_worker(plan, gpus[0], deadline)
        else:
            status = _run_worker_processes(plan, gpus[:workers], deadline)
    finally:
        print(optuna_report.write_results(plan, study), flush=True)
    return status


def _run_worker_processes(plan: SearchPlan, gpus: list[int], deadline) -> int:
    """One ``python -m fuxictr_mmctr.pipeline.optuna_worker`` per device slot; the first
    non-zero exit status of theirs, or 0."""
    from fuxictr_mmctr.pipeline.child_process import die_with_parent

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    cpu_workers = sum(1 for gpu in gpus if gpu < 0)
    if cpu_workers > 1 and "OMP_NUM_THREADS" not in env:  # share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_workers))
    processes = []
    try:
        for gpu in gpus:
            command = [sys.executable, "-m", "fuxictr_mmctr.pipeline.optuna_worker",
                       "--config", plan.config_file, "--gpu", str(gpu)]
            if deadline is not None:
                command += ["--deadline", repr(deadline)]
            processes.append(subprocess.Popen(command, env=env,
                                              preexec_fn=die_with_parent(os.getpid())))
        codes = [process.wait() for process in processes]
    except BaseException:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        raise
    failed = [code for code in codes if code != 0]
    if failed:
        print(f"search: {len(failed)} of {len(codes)} workers stopped early (exit "
              f"{', '.join(map(str, failed))})", file=sys.stderr, flush=True)
        return 1
    return 0
