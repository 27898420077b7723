"""How much of a synthetic dataset's signal a simple model can read from the files alone.

A logistic regression on hand-made features (no neural network, nothing from ``truth.parquet``):

* cosine of the target's multimodal vector with the sum of the last 3 history items' vectors,
* cosine of the target's vector with the sum of all history items' vectors,
* one-hot target item id,
* one-hot (likes_level, views_level) pair.

Its valid AUC, next to the oracle AUC, says how learnable the planted signal is with the
dataset's number of train rows. Usage::

    python benchmarks/synthetic_learnability.py data/MicroLens_synth_demo
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from fuxictr_mmctr.data.schema import (ITEM_EMB, ITEM_ID, ITEM_SEQ, LABEL, LIKES_LEVEL,
                                       VIEWS_LEVEL)
from fuxictr_mmctr.errors import UserError, exit_on_user_error
from fuxictr_mmctr.training.metrics import auc

SHORT_TERM_ITEMS = 3
CHUNK_ROWS = 50_000


def history_cosines(vectors: np.ndarray, item_seq: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``vectors (N, E)``, ``item_seq (R, L)`` left-padded, ``target (R,)`` -> ``(R, 2)``.

    Columns: cosine of the target's vector with the sum over the last 3 positions and over all
    positions (padding rows of ``vectors`` are zero, so they add nothing; empty history -> 0).
    """
    out = np.zeros((len(target), 2), dtype=np.float32)
    for start in range(0, len(target), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        history = vectors[item_seq[rows]]                          # (r, L, E)
        sums = np.stack([history[:, -SHORT_TERM_ITEMS:].sum(1), history.sum(1)], axis=1)
        target_vec = vectors[target[rows]][:, None, :]             # (r, 1, E)
        norms = np.linalg.norm(sums, axis=-1) * np.linalg.norm(target_vec, axis=-1)
        out[rows] = np.where(norms > 0, (sums * target_vec).sum(-1) / np.maximum(norms, 1e-12), 0)
    return out


def one_hot(column: np.ndarray, width: int) -> sp.csr_matrix:
    """``(R,) int -> (R, width)`` sparse indicator matrix."""
    rows = len(column)
    return sp.csr_matrix((np.ones(rows, dtype=np.float32), (np.arange(rows), column)),
                         shape=(rows, width))


def design_matrix(frame: dict, vectors: np.ndarray, level_vocab: int) -> sp.csr_matrix:
    """Sparse ``(R, 2 + N + level_vocab^2)`` features of one split (see the module docstring)."""
    cosines = history_cosines(vectors, frame[ITEM_SEQ], frame[ITEM_ID])
    level_pair = frame[LIKES_LEVEL] * level_vocab + frame[VIEWS_LEVEL]
    return sp.hstack([sp.csr_matrix(cosines), one_hot(frame[ITEM_ID], len(vectors)),
                      one_hot(level_pair, level_vocab ** 2)]).tocsr()


def read_split(path: str) -> dict:
    table = pq.read_table(path, columns=[ITEM_SEQ, ITEM_ID, LIKES_LEVEL, VIEWS_LEVEL, LABEL])
    frame = {name: table.column(name).to_numpy() for name in (ITEM_ID, LIKES_LEVEL, VIEWS_LEVEL,
                                                              LABEL)}
    frame[ITEM_SEQ] = np.stack(table.column(ITEM_SEQ).to_numpy(zero_copy_only=False))
    return frame


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder written by `fuxictr-mmctr synth`")
    parser.add_argument("--level-vocab", type=int, default=11)
    args = parser.parse_args()
    for name in ("item_info.parquet", "train.parquet", "valid.parquet", "oracle.json"):
        if not os.path.exists(os.path.join(args.folder, name)):
            raise UserError(f"{os.path.join(args.folder, name)} not found: give a folder written "
                            f"by `fuxictr-mmctr synth`")
    started = time.perf_counter()
    item_info = pq.read_table(os.path.join(args.folder, "item_info.parquet"), columns=[ITEM_EMB])
    vectors = np.stack(item_info.column(ITEM_EMB).to_numpy(zero_copy_only=False)).astype(
        np.float32)
    train = read_split(os.path.join(args.folder, "train.parquet"))
    valid = read_split(os.path.join(args.folder, "valid.parquet"))
    model = LogisticRegression(C=1.0, max_iter=500)
    model.fit(design_matrix(train, vectors, args.level_vocab), train[LABEL])
    scores = model.predict_proba(design_matrix(valid, vectors, args.level_vocab))[:, 1]
    with open(os.path.join(args.folder, "oracle.json"), encoding="utf-8") as handle:
        oracle = json.load(handle)["oracle_auc"]["valid"]
    print(f"train rows {len(train[LABEL]):,}  logistic regression valid AUC "
          f"{auc(valid[LABEL], scores):.4f}  oracle {oracle:.4f}  "
          f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
