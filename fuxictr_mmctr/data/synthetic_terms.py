"""Which parts of the planted click model a model's scores follow (synthetic data only).

The generator is deterministic per (preset, seed, split block), so the click-model terms of every
valid/test row can be drawn again without storing them. Regressing a model's logits on those
terms gives one coefficient per part: a model that reads a part correctly gets about the true
coefficient (``ClickModel``), a model that misses it gets about 0. ``benchmarks/term_recovery.py``
prints this for a scores CSV.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq

from fuxictr_mmctr.data.schema import ITEM_ID
from fuxictr_mmctr.data.synthetic import (ORACLE_FILE, PRESETS, WORLD_STREAM, random_stream,
                                          split_blocks)
from fuxictr_mmctr.data.synthetic_rows import TERM_NAMES
from fuxictr_mmctr.data.synthetic_world import build_world
from fuxictr_mmctr.errors import UserError


def split_terms(folder: str, split: str = "valid") -> np.ndarray:
    """Click-model terms ``(R, len(TERM_NAMES))`` of every row of ``folder``'s ``split``.

    The preset and seed come from the folder's ``oracle.json``; the redrawn target items are
    checked against the split file, so data from another generator version is an error, not a
    silent mismatch.
    """
    oracle_path = os.path.join(folder, ORACLE_FILE)
    if not os.path.exists(oracle_path):
        raise UserError(f"{oracle_path} not found: terms exist only for `fuxictr-mmctr synth` data")
    with open(oracle_path, encoding="utf-8") as handle:
        report = json.load(handle)
    if report.get("preset") not in PRESETS or not isinstance(report.get("seed"), int):
        raise UserError(f"{oracle_path}: no known preset and seed (preset={report.get('preset')!r}, "
                        f"seed={report.get('seed')!r})")
    preset = PRESETS[report["preset"]]
    seed = report["seed"]
    split_path = os.path.join(folder, f"{split}.parquet")
    item_id = pq.read_table(split_path, columns=[ITEM_ID]).column(ITEM_ID).to_numpy()

    world = build_world(preset, random_stream(seed, WORLD_STREAM))
    blocks = [rows for _, rows, _ in split_blocks(world, preset, split, seed, len(item_id))]
    drawn = np.concatenate([rows.item_id for rows in blocks])
    if not np.array_equal(drawn, item_id):
        raise UserError(f"{split_path}: rows differ from what preset {preset.name} seed {seed} "
                        f"draws; was it made by another version of the generator?")
    return np.concatenate([rows.terms for rows in blocks])

def term_coefficients(terms: np.ndarray, scores: np.ndarray) -> dict:
    """Least squares of ``logit(scores) (R,)`` on ``[1, terms] (R, T)``.

    Returns ``{"intercept", <term name>: coefficient ..., "r2", "residual_std"}``; scores are
    clipped to [1e-6, 1 - 1e-6] before the logit.
    """
    probs = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    logits = np.log(probs / (1 - probs))
    design = np.column_stack([np.ones(len(terms)), terms])
    coefficients, *_ = np.linalg.lstsq(design, logits, rcond=None)
    residual = logits - design @ coefficients
    result = {"intercept": float(coefficients[0])}
    result.update({name: float(c) for name, c in zip(TERM_NAMES, coefficients[1:])})
    result["r2"] = float(1 - residual.var() / logits.var()) if logits.var() > 0 else 0.0
    result["residual_std"] = float(residual.std())
    return result
