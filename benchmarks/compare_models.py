"""Compare expids side by side: seeded runs, one table (CSV + Markdown) and one chart.

    python benchmarks/compare_models.py --config config/ --dataset MicroLens_synth_demo \
        --expids Transformer_DCN_MicroLens_demo DIN_MicroLens_demo --seeds 3 [--gpu -1 | 0 1 ...]

Without ``--expids`` every expid of the config on ``--dataset`` is compared. Writes
``benchmarks/results/<dataset>/comparison.{csv,md,png}`` (``--out`` for another folder) and one
record per run under ``runs/``; rerunning reuses every run recorded with the same config and
data. ``--gpu`` lists device slots, one run at a time each (``-1 -1``: two CPU runs sharing the
cores). Run it from the folder the config's data paths are relative to (the repository root).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402


def expids_on(config_dir: str, dataset_id: str) -> list[str]:
    """Every expid of ``config_dir`` whose dataset is ``dataset_id``, in file order."""
    from fuxictr_mmctr.pipeline.config_check import expids_in
    from fuxictr_mmctr.pipeline.experiment import load_params

    return [expid for expid in expids_in(config_dir)
            if load_params(config_dir, expid)["dataset_id"] == dataset_id]


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="./config/", help="folder with the configs")
    parser.add_argument("--dataset", required=True, help="dataset_id every expid runs on")
    parser.add_argument("--expids", nargs="+", help="expids to compare (default: all on "
                                                    "--dataset)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per expid (default 3)")
    parser.add_argument("--gpu", type=int, nargs="+", default=[-1],
                        help="device slots: GPU indices, -1 for a CPU slot (default: -1)")
    parser.add_argument("--out", help="output folder (default benchmarks/results/<dataset>)")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: tables from the recorded runs only (a missing "
                             "run counts as a seed not run)")
    args = parser.parse_args(argv)

    from fuxictr_mmctr.pipeline.comparison import compare

    expids = args.expids or expids_on(args.config, args.dataset)
    result = compare(args.config, args.dataset, expids, num_seeds=args.seeds,
                     devices=args.gpu, out_dir=args.out, train=not args.no_train)
    failed = [row for row in result.rows if row["status"] not in ("ok", "not run")
              and not (args.no_train and row["reason"] == "not run")]
    if result.kept:
        print(result.kept, file=sys.stderr)
        return 1
    print(f"compared {len(result.rows)} expids ({result.trained} runs trained, "
          f"{result.reused} reused): " + ", ".join(result.outputs))
    for row in failed:
        print(f"{row['status']}: {row['expid']}: {row['reason']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
