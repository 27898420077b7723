"""One worker of an optuna search: trials run, pruned, told; abandoned trials failed.

Each trial runs the tuner's base expid in this process through
:func:`~fuxictr_mmctr.pipeline.experiment.run_experiment`, with the sampled values as overrides
and its own ``model_id`` (``<study>_trial<NNN>``). A listener on the trainer reports the
objective at every evaluation (``eval_steps`` and end of epoch) as optuna step
``round(epochs_done * STEPS_PER_EPOCH)`` and raises ``optuna.TrialPruned`` when the pruner says
so, which stops training.

Workers share the study (``--workers K``, other machines) and keep it whole:

* a trial whose worker died (killed, machine lost) is marked failed and its place taken by a
  new sample: a worker on the same machine sees that the process is gone (pid and start time
  recorded on the trial), one elsewhere that its heartbeat is older than
  ``STALE_AFTER_SECONDS``;
* a worker starts a trial only while finished plus running trials are fewer than ``trials``,
  and after ``ask`` gives the trial up again (failed, ``skipped: surplus``) if trials with lower
  numbers already fill the count; a sampled parameter set equal to a finished trial's, or to
  one a lower-numbered trial is training, is not trained again (failed, ``skipped: repeats
  trial N``) and a new one is drawn.

``python -m fuxictr_mmctr.pipeline.optuna_worker --config FILE --gpu N`` is one worker process
(:func:`~fuxictr_mmctr.pipeline.optuna_search.run_search` starts them).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import traceback

from fuxictr_mmctr.errors import UserError, exit_on_user_error, first_line
from fuxictr_mmctr.pipeline.optuna_search import (STEPS_PER_EPOCH, Objective, SearchPlan,
                                                  import_optuna, open_storage, open_study,
                                                  plan_search)

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


def fail_abandoned_trials(study, storage) -> list[int]:
    """Mark the running trials whose worker is gone as failed; returns their numbers.
    ``storage`` is the study's (:func:`open_storage`): a frozen trial's attributes are written
    through it."""
    from optuna.trial import TrialState

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
        return _fail(study, trial, f"{type(error).__name__}: {first_line(error)}")
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
    """The number of a trial with the same parameters that ``trial`` must give way to, if any:
    a finished one, or one running with a lower number (two workers that asked at once drew the
    same set; the later trial yields, the earlier trains)."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    earlier = [other for other in running if other.number < trial.number]
    return next((other.number for other in [*finished_trials(study), *earlier]
                 if other.params == trial.params), None)


def run_worker(plan: SearchPlan, gpu: int, deadline: float | None = None) -> None:
    """Run trials of the study until ``trials`` are finished (by any worker), or ``deadline``
    (``time.time()``) has passed; write the CSV after each of its trials."""
    from fuxictr_mmctr.pipeline import optuna_report

    storage = open_storage(plan)
    study = open_study(plan, storage)
    distributions = plan.distributions(import_optuna(plan.config_file))
    failures_in_a_row = repeats_in_a_row = 0
    while True:
        fail_abandoned_trials(study, storage)
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
