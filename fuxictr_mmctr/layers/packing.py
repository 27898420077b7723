"""Packed histories: the protocol of sequence layers that pay only for real history positions.

The packing math (the host-side history plan every loader batch carries, the bucket ladder,
gathering, scattering and per-bucket encoding) lives in :mod:`fuxictr_mmctr.data.history_plan`;
this module is the layers' side of it. A layer whose output at real positions does not depend
on padding (padding keys ignored by attention, padding weights exactly 0, padding outputs
zeroed or left out of the pooling) gives the same result when the padding is not computed at
all:

* the input stage (:class:`~fuxictr_mmctr.layers.input_arch.InputArch`) encodes the target and
  the real history positions only, whatever the layers do, and scatters them into the padded
  ``(B, L, D)`` layout only when a layer reads it;
* :class:`~fuxictr_mmctr.layers.target_aware_transformer.TargetAwareTransformer` builds its
  tokens and runs its encoder per length bucket;
* DIN's and QIN's attention run their per-position maps on the real positions only.

Packed layers take the history as a :class:`~fuxictr_mmctr.data.history_plan.JaggedHistory`
(values at the real positions and the batch's plan). Given a plain ``(B, L, D)`` tensor, or
while ``torch.export`` traces (static shapes), they run unpacked: same values. Under
``torch.compile`` the length buckets are not used (their sizes are host-side numbers a graph
would specialise on): the transformer runs the whole batch at its trimmed width, in one graph.

The packing protocol: a module that can skip padding has ``packable`` (``True`` when its output
does not depend on padding, so skipping it is exact) and a settable ``packed``;
:func:`apply_packed_history` switches every such module of a model, and
:func:`history_trim_exact` says whether the loader may trim the model's batches.
"""
from __future__ import annotations

import logging

import torch

from fuxictr_mmctr.data.history_plan import (
    MIN_BUCKET_WIDTH,
    HistoryPlan,
    JaggedHistory,
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


def packed_history(layer, history):
    """The :class:`JaggedHistory` a packed ``layer`` should use, or ``None`` (run unpacked):
    ``history`` is jagged, the layer packs, and ``torch.export`` is not tracing."""
    if isinstance(history, JaggedHistory) and layer.packed and packing_allowed():
        return history
    return None


def dense_history(history) -> torch.Tensor:
    """``(B, L, D)`` of a history given either way (a tensor, or a :class:`JaggedHistory`)."""
    return history.dense() if isinstance(history, JaggedHistory) else history


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


__all__ = [
    "MIN_BUCKET_WIDTH",
    "HistoryPlan",
    "JaggedHistory",
    "PackableHistory",
    "apply_packed_history",
    "bucket_ladder",
    "dense_history",
    "history_spans",
    "history_trim_exact",
    "packed_history",
    "packing_allowed",
    "trimmed_width",
]
