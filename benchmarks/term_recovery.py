"""Which parts of the synthetic click model a model's valid scores follow.

    python prediction.py --expid Transformer_DCN_MicroLens_demo \
        --data data/MicroLens_synth_demo/valid.parquet --out valid_scores.csv
    python benchmarks/term_recovery.py data/MicroLens_synth_demo valid_scores.csv

Prints the coefficient of each click-model term in a least-squares fit of the model's logits
(``fuxictr_mmctr.data.synthetic_terms``) next to the true coefficient, and the same for the oracle
(the true probabilities, which recover the true coefficients exactly). A part the model misses
shows a coefficient near 0; ``residual_std`` is the spread of the model's logits that no term
explains.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow.parquet as pq

from fuxictr_mmctr.data.synthetic import TRUTH_FILE
from fuxictr_mmctr.data.synthetic_rows import TERM_NAMES, ClickModel
from fuxictr_mmctr.data.synthetic_terms import split_terms, term_coefficients
from fuxictr_mmctr.errors import UserError, exit_on_user_error


def read_scores(path: str, rows: int) -> np.ndarray:
    """The score column (the last) of an ``ID,score`` CSV with one line per valid row."""
    if not os.path.exists(path):
        raise UserError(f"{path} not found")
    try:
        scores = np.loadtxt(path, delimiter=",", skiprows=1, usecols=-1, ndmin=1)
    except ValueError as error:
        raise UserError(f"{path}: not an ID,score CSV ({error})") from None
    if len(scores) != rows:
        raise UserError(f"{path}: {len(scores)} scores but the valid split has {rows} rows")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder written by `fuxictr-mmctr synth`")
    parser.add_argument("scores", help="ID,score CSV of the valid split (prediction.py --out)")
    args = parser.parse_args()
    terms = split_terms(args.folder, "valid")
    truth = pq.read_table(os.path.join(args.folder, TRUTH_FILE)).to_pandas()
    oracle = truth[truth["split"] == "valid"].sort_values("row")["click_prob"].to_numpy()
    fits = {"true": dict(zip(TERM_NAMES, ClickModel().coefficients.tolist())),
            "oracle fit": term_coefficients(terms, oracle),
            "model fit": term_coefficients(terms, read_scores(args.scores, len(terms)))}
    print(f"{'term':<20}" + "".join(f"{name:>12}" for name in fits))
    for term in TERM_NAMES + ("r2", "residual_std"):
        cells = "".join(f"{fit[term]:>12.3f}" if term in fit else f"{'':>12}"
                        for fit in fits.values())
        print(f"{term:<20}{cells}")


if __name__ == "__main__":
    exit_on_user_error(main)()
