"""Run a hyperparameter grid with fuxictr.autotuner: one run_expid.py process per listed device.

    python run_param_tuner.py --config config/tuner/Transformer_DCN_demo_tuner.yaml --gpu -1 -1

After the grid it prints which grid points failed, each with the last line its run wrote to
stderr. Exit status: 0 when every point finished; 2 when the tuner config is bad (one
``error:`` line, nothing run) or when every failed point failed on a usage or configuration
error (its run exited 2, e.g. ``--gpu 7`` on a machine without that GPU); 1 when any point
crashed, was killed or never started.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402
from fuxictr_mmctr.pipeline.tuner import run_grid  # noqa: E402


@exit_on_user_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", required=True, help="tuner yaml (base_expid, tuner_space)")
    parser.add_argument("--tag", default=None, help="only run expids containing this text")
    parser.add_argument("--gpu", nargs="+", type=int, default=[-1],
                        help="devices, one run at a time on each; -1 is the CPU")
    args = parser.parse_args()
    config_file = os.path.abspath(args.config)
    os.chdir(ROOT)  # the autotuner starts run_expid.py from the working folder
    report = run_grid(config_file, args.gpu, args.tag)
    status = report.exit_status()
    print(report.summary(), file=sys.stderr if status else sys.stdout, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
