"""A tuner file with ``search: {type: optuna}``: sampled trials, pruning, a shared study.

Each trial runs the tuner's base expid in this process through
:func:`~fuxictr_mmctr.pipeline.experiment.run_experiment`, with the sampled values as overrides
and its own ``model_id`` (``<study>_trial<NNN>``). A listener on the trainer reports the
objective at every evaluation (``eval_steps`` and end of epoch) as optuna step
``round(epochs_done * STEPS_PER_EPOCH)`` and raises ``optuna.TrialPruned`` when the pruner says
so, which stops training.

The study lives in the storage (a journal file ``<tuner name>.optuna.log`` in the working
folder unless ``search.storage`` names another file or an RDB URL), so:

* rerunning the command continues the study until ``trials`` trials are finished (complete or
  pruned), keeping those done;
* a trial whose worker died (killed, machine lost) is marked failed and its place taken by a
  new sample: a worker on the same machine sees that the process is gone (pid and start time
  recorded on the trial), one elsewhere that its heartbeat is older than
  ``STALE_AFTER_SECONDS``;
* workers (``--workers K`` here, or the same command on other machines with the same storage)
  share the study and never run one trial twice: a worker starts a trial only while finished
  plus running trials are fewer than ``trials``, and after ``ask`` gives the trial up again
  (failed, ``skipped: surplus``) if trials with lower numbers already fill the count. A sampled
  parameter set equal to a finished trial's is not trained again (failed, ``skipped: repeats
  trial N``) and a new one is drawn.

The results (CSV, best expid block, plots) are written by :mod:`.optuna_report`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import yaml

from fuxictr_mmctr.errors import UserError, did_you_mean, exit_on_user_error
from fuxictr_mmctr.pipeline import search_space, tuner

#: Intermediate values are reported at thousandths of an epoch (optuna steps are integers).
STEPS_PER_EPOCH = 1000
#: Finished trials before the median pruner prunes anything.
PRUNER_STARTUP_TRIALS = 3
#: A running trial writes its heartbeat this often ...
HEARTBEAT_SECONDS = 30
#: ... and counts as abandoned when none came for this long.
STALE_AFTER_SECONDS = 180
#: How often a worker with no trial to start looks at the study again.
WAIT_SECONDS = 2.0
#: A worker stops when this many of its trials failed in a row (a broken config, not bad luck).
MAX_FAILURES_IN_A_ROW = 3
#: A worker stops when the sampler proposes only finished parameter sets this many times running.
MAX_REPEATS_IN_A_ROW = 50
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


def open_study(plan: SearchPlan, create: bool = True):
    """The plan's study in its storage (created on first use), with its sampler and pruner."""
    optuna = import_optuna(plan.config_file)
    where = f"{plan.config_file}: search.storage"
    if "://" in plan.storage:
        try:
            storage = optuna.storages.RDBStorage(plan.storage)
        except Exception as error:  # a driver missing, a refused connection, a bad URL
            raise UserError(f"{where}: cannot open {plan.storage} "
                            f"({_first_line(error)})") from None
    else:
        folder = os.path.dirname(os.path.abspath(plan.storage))
        if not os.path.isdir(folder):
            raise UserError(f"{where}: folder {folder} not found (the journal file "
                            f"{os.path.basename(plan.storage)} goes there)")
        backend = optuna.storages.journal.JournalFileBackend(plan.storage)
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(storage=storage, study_name=plan.study_name,
                                sampler=make_sampler(optuna, plan.settings.sampler),
                                pruner=make_pruner(optuna, plan.settings.pruner),
                                direction=plan.objective.direction, load_if_exists=True)
    if study.direction.name.lower() != plan.objective.direction:
        raise UserError(f"{plan.config_file}: search.direction is {plan.objective.direction}, but "
                        f"study {plan.study_name} in {plan.storage} was made to "
                        f"{study.direction.name.lower()}; name another study")
    return study


def make_sampler(optuna, name: str):
    """``tpe``: TPE with the constant liar (running trials count as bad for the proposals of
    concurrent workers); ``random``: uniform sampling."""
    if name == "tpe":
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()


def make_pruner(optuna, name: str):
    """``median``: prune a trial whose value at an evaluation is worse than the median of the
    earlier trials at the same point, once PRUNER_STARTUP_TRIALS have finished; ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)
    return optuna.pruners.NopPruner()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------- one worker
def _process_start(pid: int) -> str | None:
    """The start time of live process ``pid`` (Linux: ``/proc/<pid>/stat`` field 22, so a pid
    reused by another process does not pass for it; elsewhere ``""``), or ``None`` when it is
    gone (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def worker_tag() -> str:
    """``host:pid:start`` of this process, recorded on the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or ''}"


def _abandoned(trial, now: float) -> str | None:
    """Why a running trial has no live worker, or ``None`` while it may still have one."""
    tag = trial.user_attrs.get("worker")
    if tag:
        host, pid, start = tag.rsplit(":", 2)
        if host == socket.gethostname():
            current = _process_start(int(pid))
            if current is None or (start and current and current != start):
                return f"its worker (pid {pid} on {host}) ended during the trial"
    beat = trial.user_attrs.get("heartbeat")
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if beat is not None and now - float(beat) > STALE_AFTER_SECONDS:
        return f"no heartbeat from its worker ({tag or 'unknown'}) for {now - float(beat):.0f} s"
    return None


def fail_abandoned_trials(study) -> list[int]:
    """Mark the running trials whose worker is gone as failed; returns their numbers."""
    from optuna.trial import TrialState

    storage = study._storage  # noqa: SLF001 - optuna keeps no public handle on it
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _abandoned(trial, now)
        if reason is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with contextlib.suppress(Exception):  # another worker may have just done it
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        finished = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        if finished.state == TrialState.FAIL:
            failed.append(trial.number)
            print(f"trial {trial.number}: marked failed: {reason}", flush=True)
    return failed


def finished_trials(study) -> list:
    """The trials that count towards ``trials``: complete or pruned."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _running_before(study, number: int | None = None) -> int:
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for trial in running if number is None or trial.number < number)


class PruningReporter:
    """A trainer evaluation listener: reports the objective to the trial, prunes on request.

    ``last_logs`` keeps the latest evaluation's metrics (the row of a pruned trial)."""

    def __init__(self, trial, objective: Objective):
        self.trial, self.objective = trial, objective
        self.last_logs: dict | None = None
        self.last_step: int | None = None

    def __call__(self, logs: dict, epochs_done: float) -> None:
        import optuna

        value = self.objective.value(logs)
        self.last_logs = {key: float(val) for key, val in logs.items()}
        step = int(round(epochs_done * STEPS_PER_EPOCH))
        if step != self.last_step:  # optuna keeps the first value of a step
            self.trial.report(value, step)
            self.last_step = step
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epochs_done:.3g} "
                                     f"({self.objective.name} {value:.6f})")


@contextlib.contextmanager
def _heartbeat(trial):
    """Write ``heartbeat`` (epoch seconds) on the trial every HEARTBEAT_SECONDS for the block."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                trial.set_user_attr("heartbeat", time.time())
            except Exception:  # the storage went away: the trial will be found stale
                return

    thread = threading.Thread(target=beat, name="trial-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(plan: SearchPlan, study, trial, gpu: int) -> str:
    """Train one trial and tell the study how it ended; returns ``complete``, ``pruned`` or
    ``fail``."""
    import optuna
    from optuna.trial import TrialState

    from fuxictr_mmctr.pipeline.experiment import run_experiment

    values = plan.values_of(trial.params)
    reporter = PruningReporter(trial, plan.objective)
    overrides = {**values, "model_id": plan.model_id(trial.number), "save_resume_state": False}
    trial.set_user_attr("model_id", overrides["model_id"])
    started = time.perf_counter()
    try:
        with _heartbeat(trial):
            result = run_experiment(plan.config_dir, plan.expid, gpu=gpu, overrides=overrides,
                                    evaluation_listeners=[reporter], write_row=False)
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("valid", reporter.last_logs)
        study.tell(trial, state=TrialState.PRUNED)
        outcome, detail = "pruned", str(pruned)
    except UserError as error:
        return _fail(study, trial, str(error))
    except Exception as error:  # a crash of one trial does not end the search
        traceback.print_exc()
        return _fail(study, trial, f"{type(error).__name__}: {_first_line(error)}")
    except BaseException:  # interrupted: leave no trial running behind
        _fail(study, trial, "interrupted")
        raise
    else:
        trial.set_user_attr("valid", {k: float(v) for k, v in result["valid"].items()})
        if result["test"]:
            trial.set_user_attr("test", {k: float(v) for k, v in result["test"].items()})
        if result["test_auc_truth"] is not None:  # synthetic data: test AUC from truth.parquet
            trial.set_user_attr("test_auc_truth", float(result["test_auc_truth"]))
        value = plan.objective.value(result["valid"])
        study.tell(trial, value)
        outcome, detail = "complete", f"{plan.objective.name} {value:.6f}"
    print(f"trial {trial.number}: {outcome}, {detail}, {time.perf_counter() - started:.0f} s "
          f"({_describe(values)})", flush=True)
    return outcome


def _fail(study, trial, reason: str) -> str:
    from optuna.trial import TrialState

    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    print(f"trial {trial.number}: failed: {reason}", flush=True)
    return "fail"


def _describe(values: dict) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in values.items())


def _skip(study, trial, why: str) -> None:
    """Give an asked trial up without training it (it counts for nothing)."""
    from optuna.trial import TrialState

    trial.set_user_attr("skipped", why)
    study.tell(trial, state=TrialState.FAIL)


def _repeated(study, trial) -> int | None:
    """The number of a finished trial with the same parameters, if any."""
    return next((done.number for done in finished_trials(study) if done.params == trial.params),
                None)


def run_worker(plan: SearchPlan, gpu: int, deadline: float | None = None) -> None:
    """Run trials of the study until ``trials`` are finished (by any worker), or ``deadline``
    (``time.time()``) has passed; write the CSV after each of its trials."""
    from fuxictr_mmctr.pipeline import optuna_report

    study = open_study(plan)
    distributions = plan.distributions(import_optuna(plan.config_file))
    failures_in_a_row = repeats_in_a_row = 0
    while True:
        fail_abandoned_trials(study)
        finished = len(finished_trials(study))
        if finished >= plan.settings.trials:
            return
        if deadline is not None and time.time() >= deadline:
            print(f"search: timeout_minutes reached; {finished} of {plan.settings.trials} "
                  f"trials finished", flush=True)
            return
        if finished + _running_before(study) >= plan.settings.trials:
            time.sleep(WAIT_SECONDS)  # the others' running trials may fill the count
            continue
        trial = study.ask(distributions)
        trial.set_user_attr("worker", worker_tag())
        trial.set_user_attr("command", " ".join(sys.argv))
        if len(finished_trials(study)) + _running_before(study, trial.number) >= plan.settings.trials:
            _skip(study, trial, "surplus")  # another worker asked first for the last place
            continue
        repeat = _repeated(study, trial)
        if repeat is not None:
            _skip(study, trial, f"repeats trial {repeat}")
            repeats_in_a_row += 1
            if repeats_in_a_row >= MAX_REPEATS_IN_A_ROW:
                raise UserError(f"{plan.config_file}: the sampler proposed only finished "
                                f"parameter sets {repeats_in_a_row} times running; the space "
                                f"looks exhausted (lower search.trials or widen tuner_space)")
            continue
        repeats_in_a_row = 0
        outcome = run_trial(plan, study, trial, gpu)
        optuna_report.write_csv(plan, study)
        failures_in_a_row = failures_in_a_row + 1 if outcome == "fail" else 0
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            reason = study.trials[trial.number].user_attrs.get("fail_reason")
            raise UserError(f"{plan.config_file}: {failures_in_a_row} trials in a row failed, "
                            f"the last with: {reason}")


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
    deadline = (time.time() + 60 * plan.settings.timeout_minutes
                if plan.settings.timeout_minutes else None)
    status = 0
    try:
        if workers == 1:
            run_worker(plan, gpus[0], deadline)
        else:
            status = _run_worker_processes(plan, gpus[:workers], deadline)
    finally:
        print(optuna_report.write_results(plan, study), flush=True)
    return status


def _run_worker_processes(plan: SearchPlan, gpus: list[int], deadline) -> int:
    """One ``python -m fuxictr_mmctr.pipeline.optuna_search`` per device slot; the first
    non-zero exit status of theirs, or 0."""
    from fuxictr_mmctr.pipeline.comparison import _die_with_parent

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    cpu_workers = sum(1 for gpu in gpus if gpu < 0)
    if cpu_workers > 1 and "OMP_NUM_THREADS" not in env:  # share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_workers))
    processes = []
    try:
        for gpu in gpus:
            command = [sys.executable, "-m", "fuxictr_mmctr.pipeline.optuna_search",
                       "--config", plan.config_file, "--gpu", str(gpu)]
            if deadline is not None:
                command += ["--deadline", repr(deadline)]
            processes.append(subprocess.Popen(command, env=env,
                                              preexec_fn=_die_with_parent(os.getpid())))
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


@exit_on_user_error
def main(argv=None) -> None:
    """One worker of a search started by :func:`run_search` (``--workers K``)."""
    import argparse

    parser = argparse.ArgumentParser(description="one worker of an optuna tuner search")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--deadline", type=float, default=None)
    args = parser.parse_args(argv)
    run_worker(plan_search(args.config), args.gpu, args.deadline)


if __name__ == "__main__":
    main()
