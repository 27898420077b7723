"""Run a hyperparameter search: a FuxiCTR grid, or sampled trials with optuna.

    python run_param_tuner.py --config config/tuner/Transformer_DCN_demo_tuner.yaml --gpu -1 -1
    python run_param_tuner.py --config config/tuner/Transformer_DCN_demo_optuna.yaml --gpu -1

A grid (no ``search:`` block, or ``search: {type: grid}``) runs one run_expid.py process per
listed device at a time and then prints which grid points failed, each with the last line its
run wrote to stderr. Exit status: 0 when every point finished; 2 when the tuner config is bad
(one ``error:`` line, nothing run) or when every failed point failed on a usage or
configuration error (its run exited 2, e.g. ``--gpu 7`` on a machine without that GPU); 1 when
any point crashed, was killed or never started.

A file with ``search: {type: optuna, trials: N, ...}`` (docs/tuning.md) runs ``--workers K``
processes (default: one per --gpu entry), worker i on device ``--gpu[i]``, sharing one optuna
study; rerunning the command continues it. Exit status: 0 once N trials are finished (or
timeout_minutes ended the search), 2 on a bad config, 1 when a worker stopped early.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from fuxictr_mmctr.errors import UserError, exit_on_user_error  # noqa: E402
from fuxictr_mmctr.pipeline import search_space  # noqa: E402
from fuxictr_mmctr.pipeline.tuner import read_tuner_config, run_grid  # noqa: E402


@exit_on_user_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="tuner yaml (base_expid, tuner_space, optional search block)")
    parser.add_argument("--tag", default=None, help="grid: only run expids containing this text")
    parser.add_argument("--gpu", nargs="+", type=int, default=[-1],
                        help="devices, one run at a time on each; -1 is the CPU")
    parser.add_argument("--workers", type=int, default=None,
                        help="optuna search: worker processes (default: one per --gpu entry)")
    args = parser.parse_args()
    config_file = os.path.abspath(args.config)
    os.chdir(ROOT)  # runs start from the working folder, results are written there
    config = read_tuner_config(config_file)
    if search_space.search_type(config_file, config) == "optuna":
        if args.tag is not None:
            raise UserError("--tag selects expids of a grid; an optuna search has none")
        from fuxictr_mmctr.pipeline.optuna_search import run_search

        sys.exit(run_search(config_file, args.gpu, args.workers))
    if args.workers is not None:
        raise UserError("--workers is for an optuna search (search: {type: optuna}); a grid "
                        "runs one process per --gpu entry")
    search_space.check_grid_space(config_file, config["tuner_space"])
    report = run_grid(config_file, args.gpu, args.tag)
    status = report.exit_status()
    print(report.summary(), file=sys.stderr if status else sys.stdout, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
