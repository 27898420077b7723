"""The optuna search of run_param_tuner.py: the search block, pruning, a killed worker, two
workers on one study (tiny synthetic data, trials of a few seconds)."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import optuna_search, optuna_worker, search_space
from tests.builders import REPO, inside, working_folder

optuna = pytest.importorskip("optuna")

TINY = "Transformer_DCN_MicroLens_tiny"
#: Half an epoch between evaluations on the tiny data (32 batches of 128 per epoch).
QUICK_SPACE = {"learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
               "embedding_dim": [8, 16], "epochs": 1, "eval_steps": 16}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_dataset):
    """A working folder with the repository's config, run_param_tuner.py and the tiny data."""
    folder = working_folder(tmp_path_factory.mktemp("optuna"), tiny_dataset,
                            scripts=["run_param_tuner.py", "run_expid.py"])
    os.makedirs(folder / "config" / "tuner", exist_ok=True)
    return folder


def write_tuner(folder, name, search, space=None, **extra):
    path = folder / "config" / "tuner" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base_config": "./config/", "base_expid": TINY,
                                    "dataset_id": "MicroLens_synth_tiny", "search": search,
                                    "tuner_space": QUICK_SPACE if space is None else space,
                                    **extra}))
    return path


def tuner_command(config, *args):
    return [sys.executable, "run_param_tuner.py", "--config", str(config), *args]


def child_env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def load_study(folder, name):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / f"{name}.optuna.log")))
    return optuna.load_study(study_name=name, storage=storage)


def csv_rows(folder, name):
    return (folder / f"{name}.csv").read_text().strip().splitlines()


def finished_params(study):
    return [tuple(sorted(trial.params.items())) for trial in optuna_worker.finished_trials(study)]


# --- the search block -----------------------------------------------------------------------
BAD_BLOCKS = {
    "unknown key": ({"type": "optuna", "trials": 2, "samplr": "tpe"}, None,
                    "search.samplr is not a search key; did you mean sampler?"),
    "bad type": ({"type": "optna"}, None, "search.type must be grid or optuna"),
    "no trials": ({"type": "optuna"}, None, "search.trials is missing"),
    "zero trials": ({"type": "optuna", "trials": 0}, None, "search.trials must be a positive"),
    "bad sampler": ({"type": "optuna", "trials": 2, "sampler": "grid"}, None,
                    "search.sampler must be tpe or random"),
    "bad pruner": ({"type": "optuna", "trials": 2, "pruner": "hyperband"}, None,
                   "search.pruner must be median or none"),
    "bad direction": ({"type": "optuna", "trials": 2, "direction": "up"}, None,
                      "search.direction must be maximize or minimize"),
    "negative warm-up": ({"type": "optuna", "trials": 2, "prune_after_epochs": -1}, None,
                         "search.prune_after_epochs must be a number of epochs >= 0, got -1"),
    "warm-up without pruner": ({"type": "optuna", "trials": 2, "pruner": "none",
                                "prune_after_epochs": 1}, None,
                               "search.prune_after_epochs is set but search.pruner is none"),
    "start_from_base not a bool": ({"type": "optuna", "trials": 2, "start_from_base": "yes"},
                                   None, "search.start_from_base must be true or false, got 'yes'"),
    "bad timeout": ({"type": "optuna", "trials": 2, "timeout_minutes": -1}, None,
                    "search.timeout_minutes must be a positive number"),
    "empty study": ({"type": "optuna", "trials": 2, "study": " "}, None,
                    "search.study must be a non-empty string"),
    "grid with trials": ({"type": "grid", "trials": 3}, None, "search.trials is for type: optuna"),
    "range key typo": (None, {"learning_rate": {"low": 1.0e-4, "hgih": 1.0e-2}},
                       "tuner_space.learning_rate.hgih is not a range key; did you mean high?"),
    "yaml 1e-4": (None, {"learning_rate": {"low": "1e-4", "high": 1.0e-2}},
                  "tuner_space.learning_rate.low must be a number, got '1e-4' (YAML reads"),
    "low above high": (None, {"learning_rate": {"low": 0.1, "high": 0.01}},
                       "tuner_space.learning_rate.high must be above low"),
    "log of zero": (None, {"net_dropout": {"low": 0.0, "high": 0.5, "log": True}},
                    "tuner_space.net_dropout.low must be above 0 on a log scale"),
    "float int range": (None, {"dcn_cross_layers": {"low": 1, "high": 2.5, "type": "int"}},
                        "tuner_space.dcn_cross_layers.high must be a whole number"),
    "bad range type": (None, {"dcn_cross_layers": {"low": 1, "high": 3, "type": "integer"}},
                       "tuner_space.dcn_cross_layers.type must be float or int"),
    "repeated choice": (None, {"embedding_dim": [8, 16, 8]},
                        "tuner_space.embedding_dim lists 8 twice"),
    "nothing to search": (None, {"epochs": 1}, "tuner_space has nothing to search"),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOCKS))
def test_each_mistake_in_the_search_block_is_one_line_naming_the_key(case, tmp_path):
    search, space, message = BAD_BLOCKS[case]
    config = {"search": search or {"type": "optuna", "trials": 2},
              "tuner_space": space or QUICK_SPACE}
    with pytest.raises(UserError) as caught:
        if search_space.search_type("t.yaml", config) == "optuna":
            search_space.parse_search("t.yaml", config)
            search_space.split_space("t.yaml", config["tuner_space"])
    assert str(caught.value).startswith("t.yaml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_grid_stays_a_grid_and_takes_no_ranges():
    assert search_space.search_type("t.yaml", {"tuner_space": {"epochs": [1, 2]}}) == "grid"
    assert search_space.search_type("t.yaml", {"search": {"type": "grid"}}) == "grid"
    search_space.check_grid_space("t.yaml", {"epochs": [1, 2], "monitor": {"AUC": 1}})
    with pytest.raises(UserError, match=r"^t.yaml: tuner_space.learning_rate is a range; ranges "
                                        r"need search: \{type: optuna\}"):
        search_space.check_grid_space("t.yaml", {"learning_rate": {"low": 0.1, "high": 1.0}})


def test_ranges_choices_and_fixed_values_are_told_apart():
    fixed, sampled = search_space.split_space("t.yaml", {
        "learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "dcn_cross_layers": {"low": 1, "high": 4, "type": "int"},
        "dcn_hidden_units": [[32], [64, 32]], "epochs": 2, "seed": [7],
        "monitor": {"AUC": 1, "logloss": -1}})
    assert fixed == {"epochs": 2, "seed": 7, "monitor": {"AUC": 1, "logloss": -1}}
    assert sampled["learning_rate"] == search_space.Range(1.0e-4, 1.0e-2, "float", True)
    assert sampled["dcn_cross_layers"] == search_space.Range(1, 4, "int")
    layers = sampled["dcn_hidden_units"]
    assert layers.labels == ("[32]", "[64, 32]") and layers.value_of("[64, 32]") == [64, 32]
    assert search_space.space_size({"a": layers, "b": sampled["dcn_cross_layers"]}) == 8
    assert search_space.space_size(sampled) is None  # a float range is endless


def test_plan_checks_keys_against_the_base_expid(workdir):
    cases = {
        "metric_not_evaluated": ({"type": "optuna", "trials": 2, "metric": "logloss"}, QUICK_SPACE,
                                 "search.metric 'logloss' is not computed at the evaluations"),
        "dataset_key_sampled": ({"type": "optuna", "trials": 2},
                                {**QUICK_SPACE, "synthetic_seed": [1, 2]},
                                "tuner_space.synthetic_seed is a dataset-level key"),
        "unknown_key": ({"type": "optuna", "trials": 2},
                        {**QUICK_SPACE, "learning_rat": [0.1, 0.2]},
                        "tuner_space.learning_rat is not a key of"),
        "too_many_trials": ({"type": "optuna", "trials": 5}, {"embedding_dim": [8, 16]},
                            "search.trials is 5, but tuner_space holds only 2 parameter sets"),
        "base_outside_space": ({"type": "optuna", "trials": 2, "start_from_base": True},
                               {**QUICK_SPACE, "embedding_dim": [16, 32]},
                               f"search.start_from_base: {TINY}'s embedding_dim is 8, outside "
                               f"tuner_space.embedding_dim [16, 32]"),
    }
    with inside(workdir):
        for name, (search, space, message) in cases.items():
            with pytest.raises(UserError, match=re.escape(message)):
                optuna_search.plan_search(str(write_tuner(workdir, name, search, space)))
            assert not (workdir / "config" / "tuner" / name).exists()  # nothing written


def test_start_from_base_puts_the_base_values_first_and_only_once(workdir):
    space = {"learning_rate": [1.0e-3, 2.0e-3, 4.0e-3], "embedding_dim": [8, 16],
             "net_dropout": {"low": 0.0, "high": 0.4, "step": 0.1}, "epochs": 1}
    config = write_tuner(workdir, "from_base", {"type": "optuna", "trials": 3,
                                                "sampler": "random", "start_from_base": True},
                         space)
    with inside(workdir):
        plan = optuna_search.plan_search(str(config))
        study = optuna_search.open_study(plan)
        optuna_search.enqueue_base_trial(study, plan)
        optuna_search.enqueue_base_trial(study, plan)  # a rerun does not queue it twice
        first = study.ask(plan.distributions(optuna))
        second = study.ask(plan.distributions(optuna))
    # Transformer_DCN_MicroLens_tiny: learning rate 2e-3, embedding 8, dropout 0
    assert plan.values_of(first.params) == {"learning_rate": 2.0e-3, "embedding_dim": 8,
                                            "net_dropout": 0.0}
    # Two trials in all: the queued one, then the sampler's own draw.
    queued = ["fixed_params" in trial.system_attrs for trial in study.get_trials()]
    assert queued == [True, False] and second.number == 1


def test_a_base_value_is_in_a_space_only_as_the_same_kind_of_value():
    flags = search_space.Choice((True, False))
    assert flags.label_of(True) is True and flags.label_of(1) is None
    widths = search_space.Choice((1, 2))
    assert widths.label_of(True) is None and widths.label_of(2.0) == 2
    assert search_space.Choice(([32], [64, 32])).label_of([64, 32]) == "[64, 32]"
    steps = search_space.Range(0.0, 0.4, step=0.1)
    assert steps.label_of(0.3) == 0.3 and steps.label_of(0.25) is None
    assert search_space.Range(1, 4, "int").label_of(2.5) is None
    assert search_space.Range(1.0e-4, 1.0e-2, log=True).label_of(0.1) is None


def test_without_optuna_the_search_names_the_extra_to_install(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    config = write_tuner(workdir, "no_optuna", {"type": "optuna"})
    with inside(workdir), pytest.raises(UserError) as caught:
        optuna_search.plan_search(str(config))
    assert str(caught.value) == (f"{config}: search.type optuna needs the optuna package; "
                                 f'install it with pip install -e ".[tune]"')


def test_a_bad_search_block_on_the_command_line_is_one_error_line(workdir):
    config = write_tuner(workdir, "cli_bad", {"type": "optuna", "trials": 2, "sampler": "tpee"})
    result = subprocess.run(tuner_command(config), cwd=workdir, capture_output=True, text=True,
                            env=child_env())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: search.sampler must be tpe or random, got 'tpee'; did you mean tpe?"]


def settings(**block):
    return search_space.parse_search("t.yaml", {"search": {"type": "optuna", "trials": 2, **block}})


def test_pruner_names_map_to_optuna_pruners():
    assert isinstance(optuna_search.make_pruner(optuna, settings()), optuna.pruners.MedianPruner)
    assert isinstance(optuna_search.make_pruner(optuna, settings(pruner="none")),
                      optuna.pruners.NopPruner)


def lagging_trial_pruned_at(pruner) -> list[bool]:
    """Whether a trial far below 3 complete ones is pruned at half an epoch and at one epoch."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(optuna_search.PRUNER_STARTUP_TRIALS):
        trial = study.ask()
        trial.report(0.9, 500)
        trial.report(0.9, 1000)
        study.tell(trial, 0.9)
    lagging = study.ask()
    verdicts = []
    for step in (500, 1000):
        lagging.report(0.5, step)
        verdicts.append(lagging.should_prune())
    return verdicts


def test_prune_after_epochs_spares_every_trial_until_that_many_epochs():
    assert lagging_trial_pruned_at(optuna_search.make_pruner(optuna, settings())) == [True, True]
    warm = optuna_search.make_pruner(optuna, settings(prune_after_epochs=1))
    assert lagging_trial_pruned_at(warm) == [False, True]


# --- sweeps ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_pruned_trials_stop_training_and_are_rows_with_their_last_metric(workdir, monkeypatch):
    # A pruner that prunes every trial at its first evaluation (no AUC reaches 0.99).
    monkeypatch.setattr(optuna_search, "make_pruner",
                        lambda optuna, settings: optuna.pruners.ThresholdPruner(lower=0.99))
    config = write_tuner(workdir, "pruned", {"type": "optuna", "trials": 2, "sampler": "random"})
    with inside(workdir):
        assert optuna_search.run_search(str(config), [-1]) == 0
    study = load_study(workdir, "pruned")
    states = [trial.state.name for trial in study.trials]
    assert states == ["PRUNED", "PRUNED"]
    # Stopped at the first of its two evaluations (half an epoch, one epoch).
    assert all(list(trial.intermediate_values) == [500] for trial in study.trials)
    rows = csv_rows(workdir, "pruned")
    assert len(rows) == 2 and all(",[state] pruned," in row for row in rows)
    for trial, row in zip(study.trials, rows):
        assert f"[val] AUC: {trial.intermediate_values[500]:.6f}," in row
        assert row.endswith(f",[trial] {trial.number}")
    assert (workdir / "pruned_history.png").stat().st_size > 0


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_the_rerun_completes(workdir):
    config = write_tuner(workdir, "killed", {"type": "optuna", "trials": 2, "sampler": "random",
                                             "pruner": "none"})
    worker = subprocess.Popen(tuner_command(config), cwd=workdir, env=child_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = workdir / "killed.optuna.log"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill it once a trial has reported an evaluation
        if journal.exists():
            running = load_study(workdir, "killed").get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
            if running and running[0].intermediate_values:
                break
        assert worker.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_number = running[0].number

    result = subprocess.run(tuner_command(config), cwd=workdir, capture_output=True, text=True,
                            env=child_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"trial {killed_number}: marked failed: its worker (pid {worker.pid}" in result.stdout
    study = load_study(workdir, "killed")
    assert study.trials[killed_number].state.name == "FAIL"
    assert len(optuna_worker.finished_trials(study)) == 2
    assert len(set(finished_params(study))) == 2
    states = [row.split(",[state] ")[1].split(",")[0] for row in csv_rows(workdir, "killed")]
    assert sorted(states) == ["complete"] * 2 + ["fail"]


@pytest.mark.slow
def test_two_workers_on_one_journal_finish_n_trials_each_once(workdir):
    config = write_tuner(workdir, "shared", {"type": "optuna", "trials": 2, "sampler": "random",
                                             "pruner": "none"})
    result = subprocess.run(tuner_command(config, "--workers", "2", "--gpu", "-1", "-1"),
                            cwd=workdir, capture_output=True, text=True, env=child_env())
    assert result.returncode == 0, result.stderr[-2000:]
    study = load_study(workdir, "shared")
    trained = [trial for trial in study.trials if "skipped" not in trial.user_attrs]
    assert [trial.state.name for trial in trained] == ["COMPLETE"] * 2
    assert len({trial.user_attrs["model_id"] for trial in trained}) == 2
    assert len(set(finished_params(study))) == 2
    workers = {trial.user_attrs["worker"] for trial in trained}
    assert len(workers) == 2, workers  # one trial in each process
    rows = csv_rows(workdir, "shared")
    assert sorted(int(row.rsplit("[trial] ", 1)[1]) for row in rows) == sorted(
        trial.number for trial in trained)
    assert "search: 2 of 2 trials finished (2 complete, 0 pruned, 0 failed)" in result.stdout


def test_a_running_trial_is_abandoned_when_its_process_is_gone_or_its_heartbeat_stale():
    from types import SimpleNamespace

    host, now = __import__("socket").gethostname(), time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def running(worker, heartbeat=None):
        attrs = {"worker": worker, **({"heartbeat": heartbeat} if heartbeat else {})}
        return SimpleNamespace(user_attrs=attrs, datetime_start=None)

    assert optuna_worker._abandoned(running(optuna_worker.worker_tag(), now), now) is None
    assert "ended during the trial" in optuna_worker._abandoned(
        running(f"{host}:{dead.pid}:1", now), now)
    # Another machine: only its heartbeat tells.
    elsewhere = running("other-host:1:1", now - optuna_worker.STALE_AFTER_SECONDS + 5)
    assert optuna_worker._abandoned(elsewhere, now) is None
    stale = running("other-host:1:1", now - optuna_worker.STALE_AFTER_SECONDS - 5)
    assert "no heartbeat from its worker (other-host:1:1)" in optuna_worker._abandoned(stale, now)


def test_a_set_another_worker_is_already_training_is_a_repeat_for_the_later_trial():
    """Two workers asking at once may draw the same set (a small space, a random sampler): the
    trial with the higher number gives way, the lower one trains."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    space = {"learning_rate": optuna.distributions.CategoricalDistribution([1e-3, 2e-3])}
    study.enqueue_trial({"learning_rate": 1e-3})
    study.enqueue_trial({"learning_rate": 1e-3})
    study.enqueue_trial({"learning_rate": 2e-3})
    first, second, other = (study.ask(space) for _ in range(3))   # all three running
    assert first.params == second.params
    assert optuna_worker._repeated(study, second) == first.number
    assert optuna_worker._repeated(study, first) is None
    assert optuna_worker._repeated(study, other) is None
