"""The parity check an export must pass before anything is written.

The trained model in eager mode (the reference, batched and trimmed as ``prediction.py``
batches) and the exported graph, loaded back from the files about to be written, score the
same real validation rows:

* **a slice** of the valid split: its first :data:`PARITY_ROWS` rows (the whole split when it
  is smaller), in batches whose history is cut to their longest real history (1..max_len);
* **probes**: one row alone (a batch of 1), rows with empty histories (history width 1, all
  padding), rows with full histories (width max_len), a row with an empty history alone, and
  rows cut to their most recent item (width 1). Where the slice has no empty or no full
  history, the probe is made from real rows (histories cleared, or filled with real item ids).

Every logit must satisfy ``|exported - eager| <= atol + rtol * |eager|`` (and the
probabilities the same), and the valid AUC of both on the slice must agree within
``auc`` (:data:`TOLERANCES`). A failure raises :class:`ParityError`, one line saying where
and by how much.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError

#: Valid rows scored by both sides (fewer when the valid split is smaller).
PARITY_ROWS = 10_000
#: Rows per batch of the slice.
BATCH_ROWS = 1024
#: Rows of each multi-row probe.
PROBE_ROWS = 16


@dataclass(frozen=True)
class Tolerance:
    """``|exported - eager| <= atol + rtol * |eager|`` per score; ``|AUC difference| <= auc``."""

    rtol: float
    atol: float
    auc: float


#: fp32 graphs match the eager model to float rounding; bf16 graphs run every matmul in
#: bfloat16 (8 bits of mantissa) and are compared to the float32 eager model, so looser.
TOLERANCES = {"fp32": Tolerance(rtol=1e-3, atol=1e-5, auc=5e-5),
              "bf16": Tolerance(rtol=5e-2, atol=5e-2, auc=5e-3)}


class ParityError(UserError):
    """The exported graph does not score as the trained model does."""


@dataclass
class Probe:
    """Rows scored by both sides: ``columns`` at full width (``item_seq (n, max_len)``) for the
    eager model, ``width`` history columns (the most recent) for the exported graph."""

    name: str
    columns: dict
    width: int


def valid_slice(split, input_names, max_len: int, rows: int = PARITY_ROWS) -> dict:
    """The first ``rows`` rows of ``split`` as arrays: inputs (``item_seq`` as its most recent
    ``max_len`` columns, left-padded with 0 to ``max_len`` when narrower) and ``label``."""
    count = min(int(rows), split.num_rows)
    columns = {name: np.array(split.columns[name][:count], dtype=np.int64)
               for name in input_names}
    columns[contract.ITEM_SEQ] = full_width(columns[contract.ITEM_SEQ], max_len)
    if split.label is not None:
        columns[contract.LABEL] = np.array(split.label[:count], dtype=np.float32)
    return columns


def full_width(item_seq: np.ndarray, max_len: int) -> np.ndarray:
    """``(n, w)`` -> ``(n, max_len)``: the most recent ``max_len`` columns, left-padded with 0."""
    item_seq = item_seq[:, max(item_seq.shape[1] - max_len, 0):]
    if item_seq.shape[1] < max_len:
        pad = np.zeros((len(item_seq), max_len - item_seq.shape[1]), dtype=item_seq.dtype)
        item_seq = np.concatenate([pad, item_seq], axis=1)
    return np.ascontiguousarray(item_seq)


def spans(item_seq: np.ndarray) -> np.ndarray:
    """Positions from each row's first real item to the end: ``(n, L) -> (n,)`` (0: empty)."""
    real = item_seq != contract.PADDING_ID
    first = real.argmax(axis=1)
    return np.where(real.any(axis=1), item_seq.shape[1] - first, 0)


def make_probes(columns: dict, input_names, max_len: int) -> list[Probe]:
    """The probes of the module docstring, from the slice's real rows."""
    history = columns[contract.ITEM_SEQ]
    span = spans(history)
    inputs = {name: columns[name] for name in input_names}

    def take(rows, history_rows=None) -> dict:
        taken = {name: values[rows] for name, values in inputs.items()}
        if history_rows is not None:
            taken[contract.ITEM_SEQ] = history_rows
        return taken

    probes = [Probe("a batch of 1", take([0]), max(int(span[0]), 1))]
    empty = np.flatnonzero(span == 0)[:PROBE_ROWS]
    name = "empty histories"
    if len(empty) < 2:
        empty, name = np.arange(min(PROBE_ROWS, len(span))), "empty histories (cleared)"
    cleared = np.zeros((len(empty), max_len), dtype=np.int64)
    probes.append(Probe(name, take(empty, cleared), 1))
    probes.append(Probe("an empty history alone", take(empty[:1], cleared[:1]), 1))
    full = np.flatnonzero(span == max_len)[:PROBE_ROWS]
    name = "full histories"
    if len(full) < 2:
        full, name = np.arange(min(PROBE_ROWS, len(span))), "full histories (filled)"
        items = columns[contract.ITEM_ID]
        filled = items[(np.arange(len(full) * max_len) * 7919) % len(items)]
        probes.append(Probe(name, take(full, filled.reshape(len(full), max_len)), max_len))
    else:
        probes.append(Probe(name, take(full), max_len))
    recent = np.flatnonzero(span > 0)[:PROBE_ROWS]
    if len(recent):
        last_only = np.zeros((len(recent), max_len), dtype=np.int64)
        last_only[:, -1] = history[recent, -1]
        probes.append(Probe("the most recent item only", take(recent, last_only), 1))
    return probes


def eager_logits(model, columns: dict, input_names, batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """The trained model's logits ``(n,) float32``, in batches trimmed as the evaluation loader
    trims them (when the model allows it: ``model.trims_history``)."""
    from fuxictr_mmctr.data.batches import BatchLoader
    from fuxictr_mmctr.data.loader import SplitArrays

    split = SplitArrays(path="<parity rows>",
                        columns={name: columns[name] for name in input_names})
    loader = BatchLoader(split, batch_size=batch_rows, device=model.device,
                         trim_history=bool(getattr(model, "trims_history", False)))
    model.eval()
    parts = []
    with torch.no_grad():
        for batch in loader:
            parts.append(model(batch)["logit"].float().reshape(-1).cpu().numpy())
    return np.concatenate(parts)


def exported_logits(score, columns: dict, input_names, width: int | None = None,
                    batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """The exported graph's logits: ``score({name: array}) -> (b,)`` per batch, each batch's
    history cut to ``width`` columns (default: its longest real history, at least 1)."""
    history = columns[contract.ITEM_SEQ]
    parts = []
    for start in range(0, len(history), batch_rows):
        rows = slice(start, start + batch_rows)
        cut = width or max(int(spans(history[rows]).max(initial=0)), 1)
        batch = {name: columns[name][rows] for name in input_names}
        batch[contract.ITEM_SEQ] = np.ascontiguousarray(history[rows, history.shape[1] - cut:])
        parts.append(np.asarray(score(batch), dtype=np.float32).reshape(-1))
    return np.concatenate(parts)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


def worst_excess(eager: np.ndarray, exported: np.ndarray, tolerance: Tolerance):
    """``(row, excess, abs diff, allowed)`` of the row furthest beyond the tolerance (excess
    <= 0 means within it); NaN anywhere counts as infinitely far."""
    eager64, exported64 = eager.astype(np.float64), exported.astype(np.float64)
    diff = np.abs(exported64 - eager64)
    allowed = tolerance.atol + tolerance.rtol * np.abs(eager64)
    excess = np.where(np.isfinite(diff), diff - allowed, np.inf)
    row = int(np.argmax(excess))
    return row, float(excess[row]), float(diff[row]), float(allowed[row])


def compare(name: str, eager: np.ndarray, exported: np.ndarray, tolerance: Tolerance) -> dict:
    """Logits and probabilities of one probe within ``tolerance``; ParityError otherwise.
    Returns ``{"rows", "max_abs_logit_diff", "max_abs_probability_diff"}``."""
    if eager.shape != exported.shape:
        raise ParityError(f"parity check failed on {name}: the exported graph gave "
                          f"{exported.shape[0]} scores for {eager.shape[0]} rows")
    for what, left, right in (("logit", eager, exported),
                              ("probability", _sigmoid(eager), _sigmoid(exported))):
        row, excess, diff, allowed = worst_excess(left, right, tolerance)
        if excess > 0:
            raise ParityError(
                f"parity check failed on {name}, row {row}: |exported - eager| {what} = "
                f"{diff:.3g} (eager {float(left[row]):.6g}, exported {float(right[row]):.6g}) "
                f"exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g} x |eager| = "
                f"{allowed:.3g}")
    return {"rows": int(len(eager)),
            "max_abs_logit_diff": float(np.max(np.abs(exported - eager), initial=0.0)),
            "max_abs_probability_diff": float(np.max(
                np.abs(_sigmoid(exported) - _sigmoid(eager)), initial=0.0))}


def _guarded(name: str, function, *args, **kwargs):
    """``function(*args)``; a failure of the exported graph is a ParityError naming the probe."""
    try:
        return function(*args, **kwargs)
    except UserError:
        raise
    except Exception as error:  # torch and onnxruntime raise many types
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ParityError(f"parity check failed on {name}: the exported graph did not run "
                          f"({type(error).__name__}: {first})") from None


def check_parity(model, split, input_names, max_len: int, score, precision: str = "fp32",
                 rows: int = PARITY_ROWS) -> dict:
    """Run the whole check (module docstring); return the report stored in signature.json.

    Args:
        model: the trained eager model (the reference).
        split: the valid split (:class:`~fuxictr_mmctr.data.loader.SplitArrays`, rows mapped).
        input_names: the graph's inputs, in order.
        max_len: the graph's history width.
        score: ``score({name: array}) -> (b,) logits``, the exported graph as loaded from disk.
        precision: ``fp32`` or ``bf16`` (which :data:`TOLERANCES`).
    """
    from fuxictr_mmctr.training.metrics import auc

    tolerance = TOLERANCES[precision]
    columns = valid_slice(split, input_names, max_len, rows)
    report = {"rtol": tolerance.rtol, "atol": tolerance.atol, "auc_tolerance": tolerance.auc,
              "reference": "the float32 eager model", "probes": {}}
    for probe in make_probes(columns, input_names, max_len):
        eager = eager_logits(model, probe.columns, input_names)
        exported = _guarded(probe.name, exported_logits, score, probe.columns, input_names,
                            width=probe.width)
        report["probes"][probe.name] = compare(probe.name, eager, exported, tolerance)
    eager = eager_logits(model, columns, input_names)
    exported = _guarded("the valid rows", exported_logits, score, columns, input_names)
    report["valid_rows"] = compare(f"the first {len(eager)} valid rows", eager, exported,
                                   tolerance)
    labels = columns.get(contract.LABEL)
    if labels is None or np.unique(labels).size < 2:
        report["auc"] = None
        report["auc_skipped"] = "the valid rows do not hold both labels"
        return report
    auc_eager, auc_exported = float(auc(labels, eager)), float(auc(labels, exported))
    report["auc"] = {"eager": auc_eager, "exported": auc_exported, "rows": int(len(labels))}
    if not abs(auc_eager - auc_exported) <= tolerance.auc:
        raise ParityError(f"parity check failed: valid AUC on {len(labels)} rows is "
                          f"{auc_eager:.6f} eager and {auc_exported:.6f} exported, "
                          f"{abs(auc_eager - auc_exported):.2g} apart (allowed "
                          f"{tolerance.auc:g})")
    return report
