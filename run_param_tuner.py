"""Run a hyperparameter grid with fuxictr.autotuner: one run_expid.py process per listed device.

    python run_param_tuner.py --config config/tuner/Transformer_DCN_demo_tuner.yaml --gpu -1 -1
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
    run_grid(config_file, args.gpu, args.tag)


if __name__ == "__main__":
    main()
