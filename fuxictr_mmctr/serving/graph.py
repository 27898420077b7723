"""ServingGraph: a trained model as ``(item_id, item_seq, side ids...) -> (probability, logit)``.

The model's ``forward`` takes a batch dict and returns a dict; an exported graph wants plain
tensors in and out, in a fixed order. :class:`ServingGraph` wraps the model without changing
it: positional id tensors become the batch dict, the ``(B, 1)`` logit becomes ``(B,)``, and the
probability is ``sigmoid(logit)`` inside the graph.

Two ways of taking the dynamic history length ``h`` (1..max_len):

* **as given** (``pad_history=False``): the model reads the ``(B, h)`` history itself. Exact for
  every model whose output does not depend on padding (the loader trims batches the same way);
  exported only when ``torch.export`` can prove the model valid for every ``h`` in range.
* **padded in the graph** (``pad_history=True``): the graph left-pads the history to
  ``max_len`` before the model reads it, so the model sees the width it was trained on. Used
  where the model's shapes are not valid for every ``h`` (a last-k block of k columns, say) or
  where its output depends on padding (the legacy mask).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.serving.signature import (
    BATCH,
    HISTORY,
    HISTORY_KIND,
    ITEM,
    SIDE,
    InputSpec,
)

#: Rows of the tracing batch (``torch.export`` specialises sizes 0 and 1; the history is traced
#: at its full width, max_len).
TRACE_ROWS = 4


class ServingGraph(nn.Module):
    """``forward(*ids) -> (probability (B,) float32, logit (B,) float32)``.

    Args:
        model: a trained :class:`~fuxictr_mmctr.models.base.MultimodalRankModel` (put in eval
            mode, its item side encoded once, see :func:`export_mode`).
        input_names: the batch keys, in the order of the positional inputs (``item_id (B,)``,
            ``item_seq (B, h)``, then side ids ``(B,)``).
        max_len: the history width the model was trained on.
        pad_history: left-pad ``item_seq`` to ``max_len`` inside the graph (module docstring).
        autocast_dtype: ``torch.bfloat16`` runs the model under CPU autocast; ``None``: float32.
    """

    def __init__(self, model: nn.Module, input_names, max_len: int, pad_history: bool,
                 autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.max_len = int(max_len)
        self.pad_history = bool(pad_history)
        self.autocast_dtype = autocast_dtype

    def forward(self, *ids: torch.Tensor):
        batch = dict(zip(self.input_names, ids))
        if self.pad_history:
            history = batch[contract.ITEM_SEQ]                                   # (B, h)
            batch[contract.ITEM_SEQ] = nn.functional.pad(
                history, (self.max_len - history.shape[1], 0))                   # (B, max_len)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type="cpu", dtype=self.autocast_dtype):
                logit = self.model(batch)["logit"]
        else:
            logit = self.model(batch)["logit"]
        logit = logit.reshape(-1).float()                                        # (B,)
        return torch.sigmoid(logit), logit


class EncodedItems(nn.Module):
    """A trained item encoder evaluated once for every item-table row: lookups instead of
    per-row encoding.

    In eval mode an item's representation ``[id emb || pooled tags || projected vector]``
    depends on nothing but its id, so the exported graph holds the encoded table
    ``(num_items, D)`` as a constant and gathers rows from it: the same values as the encoder
    (row 0, padding, is zeros), one ``index_select`` per call instead of the encoder's
    embedding lookups, tag pooling and projections for every target and history position.
    Stands in for :class:`~fuxictr_mmctr.layers.item_encoder.ItemEncoder` (same ``forward``,
    ``encode_target_and_history``, ``output_dim``, ``features``, ``feature_dims``).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        with torch.no_grad():
            encoded = encoder.encode_rows(None).float()                          # (N, D)
        self.register_buffer("encoded", encoded.detach().contiguous(), persistent=False)
        self.output_dim = int(encoder.output_dim)
        self.features = list(encoder.features)
        self.feature_dims = list(encoder.feature_dims)

    @property
    def num_items(self) -> int:
        return int(self.encoded.shape[0])

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``item_ids (...) int64 -> (..., D)``."""
        flat = item_ids.reshape(-1)
        return self.encoded.index_select(0, flat).view(*item_ids.shape, self.output_dim)

    def encode_target_and_history(self, target_ids: torch.Tensor, history_ids: torch.Tensor):
        """``(B,)``, ``(B, L)`` -> ``(B, D)``, ``(B, L, D)``."""
        item_ids = torch.cat([history_ids, target_ids.unsqueeze(1)], dim=1)        # (B, L + 1)
        item_emb = self(item_ids)
        return item_emb[:, -1], item_emb[:, :-1]


@contextlib.contextmanager
def export_mode(model: nn.Module, encoded_items: bool = True):
    """Inside the block the model is ready for tracing, and restored afterwards:

    * eval mode;
    * ``encoded_items``: its item encoder replaced by :class:`EncodedItems` (the whole item
      side evaluated once); otherwise per-row item gathers wherever the model chooses between
      gathers by batch size (``ItemEncoder.gather_mode="auto"`` would make the exported graph
      valid only on one side of the item table's row count; the numbers are the same either
      way).
    """
    model.eval()
    arch = getattr(model, "inputs", None)
    original = getattr(arch, "item_encoder", None)
    switched = []
    if encoded_items and original is not None:
        arch.item_encoder = EncodedItems(original)
    else:
        switched = [module for module in model.modules()
                    if getattr(module, "gather_mode", None) == "auto"]
        for module in switched:
            module.gather_mode = "rows"
    try:
        yield model
    finally:
        if encoded_items and original is not None:
            arch.item_encoder = original
        for module in switched:
            module.gather_mode = "auto"


def graph_inputs(feature_map, item_vocab: int) -> list[InputSpec]:
    """The graph's inputs for a feature map: target item, history, then every side feature
    (likes_level, views_level, user_id when it is embedded, ...) in feature-map order."""
    from fuxictr_mmctr.data.feature_map import side_features

    specs = [InputSpec(contract.ITEM_ID, "int64", (BATCH,), ITEM, int(item_vocab)),
             InputSpec(contract.ITEM_SEQ, "int64", (BATCH, HISTORY), HISTORY_KIND,
                       int(item_vocab))]
    for name in side_features(feature_map):
        vocab = int(feature_map.features[name]["vocab_size"])
        specs.append(InputSpec(name, "int64", (BATCH,), SIDE, vocab))
    return specs


def example_inputs(columns: dict, input_names, rows: int = TRACE_ROWS) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: the first ``rows`` rows (>= 2: ``torch.export`` specialises sizes 0 and
    1) of ``columns`` (``{name: (N,) or (N, h) int array}``), as int64 CPU tensors in order."""
    tensors = tuple(torch.as_tensor(columns[name][:rows]).to(torch.int64).contiguous()
                    for name in input_names)
    if tensors[0].shape[0] < 2:
        raise ValueError("tracing needs at least 2 rows (torch.export specialises sizes 0, 1)")
    return tensors


def dynamic_shapes(input_names, max_len: int):
    """``torch.export`` dynamic shapes for :class:`ServingGraph`'s ``*ids``: a shared ``batch``
    dimension (>= 1) on every input and a ``history`` dimension (1..max_len) on ``item_seq``."""
    batch = torch.export.Dim(BATCH, min=1)
    history = torch.export.Dim(HISTORY, min=1, max=int(max_len)) if max_len > 1 else None
    specs = tuple({0: batch, 1: history} if name == contract.ITEM_SEQ else {0: batch}
                  for name in input_names)
    return {"ids": specs}
