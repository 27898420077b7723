"""Predict with the best checkpoint of an experiment.

    python prediction.py --expid ID                        # submission/<ID>.zip (prediction.csv: ID,Task2)
    python prediction.py --expid ID --data X.parquet --out scores.csv   # ID,score in row order
    python prediction.py --artifact DIR --data X.parquet --out scores.csv  # the same, from an
                                          # exported artifact alone (fuxictr-mmctr export)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402
from fuxictr_mmctr.pipeline.prediction import run_prediction  # noqa: E402


@exit_on_user_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="./config/", help="folder with dataset/model configs")
    parser.add_argument("--expid", default=None, help="experiment id (or --artifact)")
    parser.add_argument("--artifact", default=None,
                        help="artifact folder from fuxictr-mmctr export (instead of --expid; "
                             "needs --data and --out)")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    parser.add_argument("--data", default=None, help="parquet to score (same schema as test)")
    parser.add_argument("--out", default=None, help="CSV to write with --data")
    args = parser.parse_args()
    run_prediction(args.config, args.expid, gpu=args.gpu, data=args.data, out=args.out,
                   artifact=args.artifact)


if __name__ == "__main__":
    main()
