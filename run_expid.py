"""Train and evaluate one experiment, FuxiCTR style.

    python run_expid.py --expid Transformer_DCN_MicroLens_demo [--config config/] [--gpu -1]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402
from fuxictr_mmctr.pipeline.experiment import run_experiment  # noqa: E402
from fuxictr_mmctr.training.distributed import DEFAULT_TIMEOUT_MINUTES  # noqa: E402


@exit_on_user_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="./config/", help="folder with dataset/model configs")
    parser.add_argument("--expid", default="Transformer_DCN_MicroLens_demo", help="experiment id")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run of this expid (an error when there "
                             "is none, or when its config or data changed)")
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_MINUTES,
                        metavar="MINUTES",
                        help="torchrun: stop the job when a process hears nothing from the "
                             f"others for this long (default {DEFAULT_TIMEOUT_MINUTES:g})")
    args = parser.parse_args()
    run_experiment(args.config, args.expid, gpu=args.gpu, resume=args.resume,
                   dist_timeout_minutes=args.dist_timeout)


if __name__ == "__main__":
    main()
