"""Packed histories: sequence layers that pay only for real history positions, exactly.

Histories are left-padded (padding first, the most recent item last) and short: on MicroLens
the median row has 6 real items out of 100 positions. A layer whose output at real positions
does not depend on padding (padding keys ignored by attention, padding weights exactly 0,
padding outputs zeroed or left out of the pooling) gives the same result when the padding is
not computed at all. Three exact ways of skipping it live here:

* **trimming** (:func:`trimmed_width`): drop the leading columns that are padding in every row
  of the batch, rounded up to a width of the bucket ladder. Exact for any layer without
  positions counted from the left (``layers/positional.py`` counts from the most recent end);
  the loader does it (``BatchLoader(trim_history=True)``), before the batch reaches the device.
* **length buckets** (:func:`encode_in_buckets`): inside the layer, rows are grouped by their
  *span* (positions from their first real item to the end) into the ladder's widths
  (``8, 16, 32, ... , L``); each group runs the encoder and the pooling on its last ``w``
  columns only and the pooled rows are put back in batch order. Used by
  :class:`~fuxictr_mmctr.layers.target_aware_transformer.TargetAwareTransformer`.
* **jagged positions** (:func:`real_positions`): per-position maps (DIN's scoring MLP, QIN's
  key and value maps) run on the real ``(row, column)`` pairs only.

The batch keeps its rows either way, so training sees the same batches as without packing.
Bucketing and jagged positions read the row lengths on the host (one device sync per forward);
under ``torch.compile`` the bucket dispatch runs eagerly
(``torch.compiler.disable(recursive=False)``) and the encoder calls inside it are compiled,
with the row count dynamic and one graph per bucket width. ``torch.export`` always takes the
unpacked path (same values, static shapes).

The packing protocol: a module that can skip padding has ``packable`` (``True`` when its output
does not depend on padding, so skipping it is exact) and a settable ``packed``;
:func:`apply_packed_history` switches every such module of a model, and
:func:`history_trim_exact` says whether the loader may trim the model's batches.
"""
from __future__ import annotations

import logging

import torch

from fuxictr_mmctr.data.batches import (
    MIN_BUCKET_WIDTH,
    bucket_ladder,
    history_spans,
    trimmed_width,
)
from fuxictr_mmctr.errors import UserError

logger = logging.getLogger(__name__)


class PackableHistory:
    """Mixin of a sequence layer that can skip padding: ``packable`` (class or instance
    attribute, or property: is skipping padding exact?) and ``packed`` (is it on?).

    ``packed`` is on from construction wherever it is exact; switching it on where it is not is
    a :class:`UserError` naming :attr:`unpackable_reason`.
    """

    packable = True
    unpackable_reason = "its output depends on the padding"

    @property
    def packed(self) -> bool:
        return getattr(self, "_packed", True) and self.packable

    @packed.setter
    def packed(self, on: bool) -> None:
        if on and not self.packable:
            raise UserError(f"{type(self).__name__} cannot pack its history: "
                            f"{self.unpackable_reason}")
        self._packed = bool(on)


def packing_allowed() -> bool:
    """Whether packing may run now: not while ``torch.export`` traces (static shapes)."""
    return not torch.compiler.is_exporting()


def encode_in_buckets(encode, real: torch.Tensor, pool, min_width: int = MIN_BUCKET_WIDTH):
    """Encode each row over its last ``w`` columns only, ``w`` its span's bucket width, and pool.

    Args:
        encode: ``encode(rows, start) -> (b, L - start, T)``, the encoder outputs of the rows
            ``rows`` (``(b,)`` int64, or ``None`` for every row) over columns ``start..L-1``.
            An output at a real position may depend only on real positions (padding keys
            ignored, no positions counted from the left), and every row must keep one key
            inside its bucket (a row without real items keeps its last one).
        real: ``(B, L) bool``, ``True`` at real positions.
        pool: ``pool(encoded (b, w, T), real (b, w) bool) -> (b, P)``; it must ignore the
            outputs at padding positions (zero them or leave them out).
        min_width: narrowest bucket.

    Returns ``(B, P)``, the pooled rows in batch order: what ``pool`` gives on the unpacked
    encoder's outputs, since the columns skipped are padding for every row of their bucket.
    Rows are grouped by bucket (one host sync for the group sizes), each group is encoded and
    pooled on its own columns (so no ``(B, L, T)`` output is ever made), and the groups are put
    back in batch order.

    Under ``torch.compile`` this dispatch runs eagerly (the group sizes are read on the host)
    while ``encode`` and ``pool`` are compiled, one graph per bucket width.
    """
    dispatch = _encode_in_buckets
    if torch.compiler.is_compiling():  # (only then: importing TorchDynamo takes a second or two)
        dispatch = torch.compiler.disable(dispatch, recursive=False)
    return dispatch(encode, real, pool, min_width)


def _encode_in_buckets(encode, real, pool, min_width):
    """:func:`encode_in_buckets` itself."""
    length = real.shape[-1]
    ladder = bucket_ladder(length, min_width)
    spans = history_spans(real)
    boundaries = torch.tensor(ladder[:-1], device=spans.device, dtype=spans.dtype)
    bucket = torch.bucketize(spans, boundaries)                             # (B,) ladder index
    counts = torch.bincount(bucket, minlength=len(ladder)).tolist()        # the one host sync
    used = [index for index, count in enumerate(counts) if count]
    if len(used) == 1:  # one group: no gather, no reordering
        start = length - ladder[used[0]]
        return pool(encode(None, start), real[:, start:])
    order = torch.argsort(bucket, stable=True)                              # rows by bucket
    parts = []
    for index, rows in zip(range(len(ladder)), order.split(counts)):
        if counts[index]:
            start = length - ladder[index]
            parts.append(pool(encode(rows, start), real[rows, start:]))
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(len(order),
                                                                      device=order.device))
    return torch.cat(parts).index_select(0, inverse)                        # batch order


def real_positions(mask: torch.Tensor):
    """The real ``(row, column)`` pairs of a ``(B, L) bool`` mask: two ``(N,) int64`` tensors.

    One host sync (the count ``N`` is data-dependent). Gather with ``values[rows, columns]``
    (``(B, L, D) -> (N, D)``) and put results back with :func:`scatter_positions`.
    """
    return mask.nonzero(as_tuple=True)


def scatter_positions(values: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor,
                      shape) -> torch.Tensor:
    """``(N, ...) -> shape`` (``(B, L, ...)``) with ``values`` at ``(rows, columns)``, zeros
    elsewhere; differentiable in ``values``."""
    return values.new_zeros(shape).index_put((rows, columns), values)


def apply_packed_history(model, on: bool) -> list[str]:
    """Switch packing on (where exact) or off in every packable module of ``model``.

    Returns the names of the modules that pack. A module whose output depends on padding
    (``packable`` false, e.g. the legacy mask) keeps its unpacked path, and one log line says so.
    """
    packing = []
    for name, module in model.named_modules():
        if not hasattr(module, "packable"):
            continue
        module.packed = bool(on) and module.packable
        if module.packed:
            packing.append(name or type(module).__name__)
        elif on:
            logger.info("packed_history: %s keeps the unpacked path (%s)",
                        name or type(module).__name__,
                        getattr(module, "unpackable_reason", "its output depends on padding"))
    return packing


def history_trim_exact(model) -> bool:
    """Whether dropping leading all-padding columns leaves ``model``'s output unchanged: true
    unless one of its modules says that its output depends on padding (``packable`` false)."""
    return all(module.packable for module in model.modules() if hasattr(module, "packable"))


__all__ = ["MIN_BUCKET_WIDTH", "PackableHistory", "apply_packed_history", "bucket_ladder",
           "encode_in_buckets", "history_spans", "history_trim_exact", "packing_allowed",
           "real_positions", "scatter_positions", "trimmed_width"]
