"""Train and evaluate one experiment, FuxiCTR style.

    python run_expid.py --expid Transformer_DCN_MicroLens_demo [--config config/] [--gpu -1]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402
from fuxictr_mmctr.pipeline.experiment import run_experiment  # noqa: E402


@exit_on_user_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="./config/", help="folder with dataset/model configs")
    parser.add_argument("--expid", default="Transformer_DCN_MicroLens_demo", help="experiment id")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args()
    run_experiment(args.config, args.expid, gpu=args.gpu, resume=args.resume)


if __name__ == "__main__":
    main()
