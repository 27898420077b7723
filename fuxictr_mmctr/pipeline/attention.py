"""What a trained model's history attention looks at (``fuxictr-mmctr attention``).

For the first ``N`` validation rows with a non-empty history, the attention weights of every
transformer layer over the history positions are read from the trained checkpoint and written as

    <out>/<expid>_attention.csv    row, layer, position (0 = most recent), item_id, attention,
                                   real (1 = a history item), session_planted (synthetic data)
    <out>/<expid>_attention.png    heatmap: rows x positions, last layer, planted items marked
    <out>/<expid>_attention.json   per layer: mean attention on history items and, on synthetic
                                   data, the share of it on the items planted as the session topic

``attention`` of a key position is the weight it receives averaged over the row's real query
positions (each query's weights sum to 1 over the keys it may see). On synthetic data the
generator knows which history items it drew from the row's session topic
(:func:`~fuxictr_mmctr.data.synthetic_terms.split_session_planted`, redrawn from the seed,
never read by a model); ``session_share`` is the attention on those items over the attention on
all history items, and ``uniform_share`` what attention spread evenly over the history would
give. Weights are recomputed from each encoder layer's input with the layer's own attention
module (a forward pre-hook), so the model code is not changed to expose them; packing is
switched off first, so positions are the padded columns.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import atomic_path, write_text_atomic

#: Rows drawn in the heatmap at most (the CSV has all of them).
HEATMAP_MAX_ROWS = 48


class AttentionRecorder:
    """Records ``(B, L, L)`` head-averaged attention weights of every
    ``nn.TransformerEncoderLayer`` in a model, in call order, while in its ``with`` block."""

    def __init__(self, model: nn.Module):
        self.layers = [module for module in model.modules()
                       if isinstance(module, nn.TransformerEncoderLayer)]
        self.weights: list[torch.Tensor] = []
        self._handles = []

    def __enter__(self) -> "AttentionRecorder":
        for layer in self.layers:
            self._handles.append(layer.register_forward_pre_hook(self._record, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, layer: nn.TransformerEncoderLayer, args, kwargs) -> None:
        """Recompute the layer's self-attention weights from its input ``(B, L, T)``."""
        src = args[0] if args else kwargs["src"]
        padding = kwargs.get("src_key_padding_mask", args[2] if len(args) > 2 else None)
        mask = kwargs.get("src_mask", args[1] if len(args) > 1 else None)
        query = layer.norm1(src) if layer.norm_first else src
        with torch.no_grad():
            _, weights = layer.self_attn(query, query, query, key_padding_mask=padding,
                                         attn_mask=mask, need_weights=True,
                                         average_attn_weights=True)
        self.weights.append(weights.detach().float().cpu())


def received_attention(weights: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Attention each key position receives, averaged over the row's real query positions.

    ``weights (B, L, L)`` (query, key), ``real (B, L) bool`` -> ``(B, L)``; a row without real
    positions gets zeros.
    """
    queries = real.float().unsqueeze(-1)                          # (B, L, 1)
    total = (weights * queries).sum(dim=1)                        # (B, L)
    count = queries.sum(dim=1).clamp(min=1.0)                     # (B, 1)
    return total / count


def session_shares(attention: np.ndarray, real: np.ndarray, planted: np.ndarray) -> dict:
    """Shares of one layer's attention ``(R, L)`` on history items ``real (R, L)`` and, of that,
    on the ``planted (R, L)`` session items; averaged over rows with a planted item."""
    on_history = (attention * real).sum(axis=1)
    summary = {"attention_on_history": float(on_history.mean())}
    if planted is None:
        return summary
    rows = (planted & real).any(axis=1) & (on_history > 0)
    on_planted = (attention * (planted & real)).sum(axis=1)
    summary["rows_with_planted_items"] = int(rows.sum())
    if rows.any():
        summary["session_share"] = float((on_planted[rows] / on_history[rows]).mean())
        summary["uniform_share"] = float(((planted & real).sum(axis=1)[rows]
                                          / real.sum(axis=1)[rows]).mean())
    return summary


def inspect_attention(config_dir: str, expid: str, rows: int = 32, gpu: int = -1,
                      out_dir: str | None = None, seed: int | None = None) -> dict:
    """Write the CSV, PNG and JSON of the module docstring; returns the JSON's content.

    ``seed`` reads the checkpoint of that seed's run of a model comparison
    (``<expid>_seed<S>``, see :mod:`.comparison`) instead of the expid's own.
    """
    from fuxictr_mmctr.pipeline.experiment import build_model, load_params, prepare
    from fuxictr_mmctr.training.devices import resolve_device

    if rows < 1:
        raise UserError(f"--rows must be at least 1, got {rows}")
    resolve_device(gpu)
    overrides = None if seed is None else {"model_id": f"{expid}_seed{int(seed)}"}
    params = load_params(config_dir, expid, gpu, overrides)
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    recorder = AttentionRecorder(model)
    if not recorder.layers:
        raise UserError(f"expid {expid}: model {params['model']} has no transformer attention "
                        f"over the history to inspect")
    if not os.path.exists(model.checkpoint):
        raise UserError(f"no trained model for expid {expid} at {model.checkpoint}; "
                        + (f"train it first: python run_expid.py --expid {expid}" if seed is None
                           else "run benchmarks/compare_models.py with this expid and seed"))
    model.load_weights(model.checkpoint)
    _unpack(model)
    out_dir = out_dir or os.path.join("benchmarks", "results", params["dataset_id"], "attention")

    keep, item_seq, attention = _attention_of_rows(model, recorder, params, catalogue, rows)
    real = item_seq > 0
    planted = _planted(params, keep, item_seq.shape[1])
    # The checkpoint relative to the working folder: the summary reads the same on every machine.
    summary = {"expid": expid, "checkpoint": os.path.relpath(model.checkpoint),
               "rows": int(len(item_seq)),
               "layers": [session_shares(layer, real, planted) for layer in attention]}
    base = os.path.join(out_dir, f"{params['model_id']}_attention")
    write_text_atomic(base + ".csv", _csv(item_seq, attention, planted))
    write_text_atomic(base + ".json", json.dumps(summary, indent=2) + "\n")
    _heatmap(attention[-1], real, planted, base + ".png", expid)
    summary["outputs"] = [base + ext for ext in (".csv", ".png", ".json")]
    return summary


def _unpack(model) -> None:
    """Packed layers call each encoder layer once per length bucket: read the padded one."""
    try:
        from fuxictr_mmctr.layers.packing import apply_packed_history
    except ImportError:
        return
    apply_packed_history(model, False)


def _attention_of_rows(model, recorder, params, catalogue, rows: int):
    """The indices of the first ``rows`` valid rows with a history, their ``item_seq (R, L)``
    (the model's ``L = max_len`` most recent columns) and per layer the attention their
    positions receive, ``(R, L)`` each, right-aligned with ``item_seq``."""
    from fuxictr_mmctr.data.schema import ITEM_SEQ
    from fuxictr_mmctr.pipeline.experiment import make_loader

    loader = make_loader(params, catalogue, params["valid_data"], False, model.device)
    full_seq = loader.split.columns[ITEM_SEQ]
    max_len = params.get("max_len") or full_seq.shape[1]
    keep = np.flatnonzero((np.asarray(full_seq)[:, -max_len:] > 0).any(axis=1))[:rows]
    if len(keep) == 0:
        raise UserError(f"{params['valid_data']}: no row with a history to inspect")
    seen, layers = 0, None
    model.eval()
    for batch in loader:
        size = len(batch[ITEM_SEQ])
        wanted = keep[(keep >= seen) & (keep < seen + size)] - seen
        seen += size
        if len(wanted) == 0:
            if seen > keep[-1]:
                break
            continue
        recorder.weights.clear()
        with recorder, torch.no_grad():
            model(batch)
        width = recorder.weights[0].shape[-1]
        real = (batch[ITEM_SEQ][:, -width:] > 0).cpu()
        received = [received_attention(w, real)[torch.as_tensor(wanted)] for w in recorder.weights]
        layers = received if layers is None else [torch.cat([a, b]) for a, b in
                                                 zip(layers, received)]
    item_seq = np.asarray(full_seq)[keep][:, -max_len:]
    width = layers[0].shape[-1]
    attention = [np.pad(layer.numpy(), ((0, 0), (item_seq.shape[1] - width, 0)))
                 for layer in layers]
    return keep, item_seq, attention


def _planted(params, keep: np.ndarray, width: int):
    """The generator's session-topic positions ``(R, width) bool`` of the inspected valid rows
    ``keep``, right-aligned like the model's history, or None (real data)."""
    folder = os.path.dirname(params["valid_data"])
    if not os.path.exists(os.path.join(folder, "oracle.json")):
        return None
    from fuxictr_mmctr.data.synthetic_terms import split_session_planted

    return split_session_planted(folder, "valid")[keep][:, -width:]


def _csv(item_seq: np.ndarray, attention: list[np.ndarray], planted) -> str:
    lines = ["row,layer,position,item_id,attention,real,session_planted"]
    width = item_seq.shape[1]
    for layer, weights in enumerate(attention):
        for row in range(len(item_seq)):
            for column in range(width):
                flag = "" if planted is None else int(planted[row, column])
                lines.append(f"{row},{layer},{width - 1 - column},{int(item_seq[row, column])},"
                             f"{weights[row, column]:.6g},{int(item_seq[row, column] > 0)},{flag}")
    return "\n".join(lines) + "\n"


def _heatmap(attention: np.ndarray, real: np.ndarray, planted, path: str, expid: str) -> None:
    """Rows x positions of the last layer; padding grey, planted session items dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = slice(0, min(len(attention), HEATMAP_MAX_ROWS))
    values = np.ma.masked_where(~real[shown], attention[shown])
    width = attention.shape[1]
    figure, axes = plt.subplots(figsize=(min(2 + 0.3 * width, 14), 1.5 + 0.22 * values.shape[0]))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = axes.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest")
    if planted is not None:
        row_index, column_index = np.nonzero(planted[shown] & real[shown])
        axes.scatter(column_index, row_index, s=10, c="white", marker="o",
                     label="planted session item")
        axes.legend(loc="upper left", fontsize=7, framealpha=0.8)
    ticks = list(range(width - 1, -1, -max(width // 10, 1)))
    axes.set_xticks(ticks)
    axes.set_xticklabels([str(width - 1 - tick) for tick in ticks])
    axes.set_xlabel("history position (0 = most recent; grey = padding)")
    axes.set_ylabel("validation row")
    axes.set_title(f"{expid}: attention received per history item (last layer)", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110)
    plt.close(figure)
