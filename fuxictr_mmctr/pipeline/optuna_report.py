"""What an optuna search leaves behind, rebuilt from its study after every trial and at the end.

In the results folder (the working folder), for a tuner file ``<name>.yaml``:

* ``<name>.csv``: one FuxiCTR result row per trial (as a grid writes them), plus ``[state]``
  (complete, pruned, fail) and ``[trial]`` (its number); a pruned trial's ``[val]`` holds the
  metrics of its last evaluation, a failed one's ``N.A.``. Trials given up without training
  (a surplus or repeated parameter set) have no row.
* ``<name>_best.yaml``: the best complete trial as an expid block ready to paste into a model
  config (also printed).
* ``<name>_history.png``: the objective of every trial (pruned ones at their last evaluation)
  and the best so far.
* ``<name>_importance.png``: parameter importances by optuna's fANOVA evaluator (a random forest
  on the complete trials' parameters and objective), once two complete trials differ.
"""
from __future__ import annotations

import yaml

from fuxictr_mmctr.fileio import write_text_atomic
from fuxictr_mmctr.pipeline.experiment import result_row

#: Complete trials the importance plot needs.
MIN_TRIALS_FOR_IMPORTANCE = 2


def _state(trial) -> str:
    return trial.state.name.lower()


def reported_trials(study) -> list:
    """Trials that get a CSV row: every finished one except those given up untrained."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [trial for trial in study.get_trials(deepcopy=False, states=done)
            if "skipped" not in trial.user_attrs]


def csv_text(plan, study) -> str:
    """The CSV rows of every reported trial, in trial order."""
    from fuxictr.utils import print_to_list

    dataset_id = plan.base_params.get("dataset_id")
    rows = []
    for trial in reported_trials(study):
        attrs = trial.user_attrs
        rows.append(result_row(
            attrs.get("model_id", plan.model_id(trial.number)), dataset_id, attrs.get("valid"),
            attrs.get("test"), print_to_list,
            when=trial.datetime_complete or trial.datetime_start,
            command=attrs.get("command", ""),
            extra={"state": _state(trial), "trial": trial.number}))
    return "".join(rows)


def write_csv(plan, study) -> str:
    path = plan.output(".csv")
    write_text_atomic(path, csv_text(plan, study))
    return path


def best_expid_block(plan, study) -> str | None:
    """The best complete trial as a YAML expid block (the base expid's settings with the
    trial's values), headed by comments saying where it comes from; ``None`` before any."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    params = {key: value for key, value in plan.base_params.items() if key != "model_id"}
    params.update(plan.values_of(best.params))
    name = f"{plan.tuner_name}_best"
    body = yaml.safe_dump({name: params}, sort_keys=False, default_flow_style=None, indent=4,
                          width=100)
    truth = best.user_attrs.get("test_auc_truth")
    test_text = "" if truth is None else f"; test AUC {truth:.6f} against truth.parquet"
    return (f"# Best of study {plan.study_name}: trial {best.number} "
            f"({plan.objective.name} {best.value:.6f} on the valid split{test_text})\n"
            f"# Paste into a file of config/model_config/ and run: "
            f"python run_expid.py --expid {name}\n{body}")


def _objective_points(study):
    """``(number, value, state)`` of the complete trials and the pruned ones (at their last
    reported value), in trial order."""
    points = []
    for trial in study.get_trials(deepcopy=False):
        if _state(trial) == "complete":
            points.append((trial.number, trial.value, "complete"))
        elif _state(trial) == "pruned" and trial.intermediate_values:
            last_step = max(trial.intermediate_values)
            points.append((trial.number, trial.intermediate_values[last_step], "pruned"))
    return points


def plot_history(plan, study, path: str) -> bool:
    """Objective per trial and the best so far; ``False`` (nothing written) without trials."""
    points = _objective_points(study)
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - used through matplotlib.ticker

    maximize = plan.objective.direction == "maximize"
    fig, axis = plt.subplots(figsize=(7, 4))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        chosen = [(n, v) for n, v, s in points if s == state]
        if chosen:
            axis.scatter(*zip(*chosen), marker=marker, label=state if state == "complete"
                         else "pruned (last evaluation)")
    best, best_line = None, []
    for number, value, state in points:
        if state == "complete" and (best is None or (value > best if maximize else value < best)):
            best = value
        if best is not None:
            best_line.append((number, best))
    if best_line:
        axis.step(*zip(*best_line), where="post", color="black", linewidth=1, label="best so far")
    axis.set_xlabel("trial")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_ylabel(f"{plan.objective.name} (valid)")
    axis.set_title(f"{plan.study_name}: optimisation history")
    axis.legend(loc="best", fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_importance(plan, study, path: str) -> str | None:
    """Bar chart of fANOVA importances; returns why it was not drawn, or ``None``."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return f"needs {MIN_TRIALS_FOR_IMPORTANCE} complete trials, the study has {len(complete)}"
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as error:  # e.g. every complete trial alike
        return str(error).splitlines()[0]
    if not importances:
        return "no parameter varies between the complete trials"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, axis = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    axis.barh(names, [importances[name] for name in names])
    axis.set_xlabel(f"importance for {plan.objective.name} (fANOVA, {len(complete)} complete "
                    f"trials)")
    axis.set_title(f"{plan.study_name}: parameter importances")
    fig.tight_layout()
    _save(fig, path)
    return None


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    from fuxictr_mmctr.fileio import atomic_path

    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, dpi=110, format="png")
    plt.close(fig)


def summary(plan, study) -> str:
    """One line of counts: finished out of the target, complete, pruned, failed."""
    states = [_state(trial) for trial in reported_trials(study)]
    finished = states.count("complete") + states.count("pruned")
    return (f"search: {finished} of {plan.settings.trials} trials finished "
            f"({states.count('complete')} complete, {states.count('pruned')} pruned, "
            f"{states.count('fail')} failed) in study {plan.study_name} ({plan.storage})")


def write_results(plan, study) -> str:
    """Write the CSV, the best block and the plots; return what to print."""
    lines = [summary(plan, study), f"results: {write_csv(plan, study)}"]
    block = best_expid_block(plan, study)
    if block is not None:
        path = plan.output("_best.yaml")
        write_text_atomic(path, block)
        lines += [f"best trial: {path}", block.rstrip()]
    history = plan.output("_history.png")
    if plot_history(plan, study, history):
        lines.append(f"history: {history}")
    importance = plan.output("_importance.png")
    why_not = plot_importance(plan, study, importance)
    lines.append(f"importance: {importance}" if why_not is None
                 else f"importance: not drawn ({why_not})")
    return "\n".join(lines)
