"""Which parts of the planted click model a model's scores follow (synthetic data only).

The generator is deterministic per (preset, seed, split block), so the click-model terms of every
valid/test row can be drawn again without storing them. Regressing a model's logits on those
terms gives one coefficient per part: a model that reads a part correctly gets about the true
coefficient (``ClickModel``), a model that misses it gets about 0. ``benchmarks/term_recovery.py``
prints this for a scores CSV. :func:`split_session_planted` redraws, the same way, which history
positions of each row were planted as the session topic (for inspecting attention).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq

from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ
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
    return np.concatenate([rows.terms for rows in _redrawn_blocks(folder, split)])


def split_session_planted(folder: str, split: str = "valid") -> np.ndarray:
    """Which history positions of ``folder``'s ``split`` were planted as the session topic:
    ``(R, L) bool``, aligned with the ``item_seq`` columns (see ``Rows.session_planted``).

    Redrawn from the seeded generator like :func:`split_terms`; both the target items and
    ``item_seq`` are checked against the split file. Generator truth for inspecting attention:
    nothing a model reads holds it.
    """
    blocks = _redrawn_blocks(folder, split)
    split_path = os.path.join(folder, f"{split}.parquet")
    item_seq = pq.read_table(split_path, columns=[ITEM_SEQ]).column(ITEM_SEQ).combine_chunks()
    written = item_seq.flatten().to_numpy().reshape(len(item_seq), -1)
    if not np.array_equal(np.concatenate([rows.item_seq for rows in blocks]), written):
        raise UserError(f"{split_path}: column {ITEM_SEQ} differs from what the generator draws; "
                        f"was it made by another version of the generator?")
    return np.concatenate([rows.session_planted for rows in blocks])


def _redrawn_blocks(folder: str, split: str) -> list:
    """The ``Rows`` blocks of ``split`` drawn again from the preset and seed in ``oracle.json``,
    after checking that their target items equal the split file's."""
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
    return blocks


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
