"""History plans: the jagged layout of a batch's left-padded histories, made on the host.

Histories are left-padded (padding first, the most recent item last) and short: on MicroLens
the median row has 6 real items out of 100 positions. The loader knows every row's *span*
(positions from its first real item to the end) before a batch leaves the host, so it also
says, per batch, where the real positions are and how the rows group by length. That plan
travels in the batch beside the ids (as TorchRec's ``KeyedJaggedTensor`` carries lengths and
offsets), so no layer has to read the mask back to the host to find the real positions.

A batch of ``B`` rows whose history is ``W`` columns wide, with ``N`` real positions, carries

* ``history_lengths (B,) int64``: each row's span;
* ``history_slots (N',) int64``: the flat position ``row * W + column`` of every real position,
  row after row, left to right; ``N' = max(N, MIN_SLOTS)``: a batch with fewer real positions
  gets *filler* slots ``B * W``, one past the last position, whose values are zeros and whose
  results land in a slot that is dropped (so ``N'`` is never 0 or 1, sizes a compiler would
  otherwise specialise on);
* ``history_order (B,) int64``: the rows grouped by length bucket (narrowest first, batch order
  inside a bucket);
* ``history_buckets``: ``(1 + len(bucket_ladder(W)),) int64`` *on the host*, never copied to
  the device: ``W``, then the number of rows of each width of :func:`bucket_ladder` ``(W)``.
  Read in eager mode only (a host tensor: no device sync); when something moved it to a device
  anyway (``DistributedDataParallel`` moves every input tensor), it is left unread and the
  layers that group rows by length run the whole batch at its width (same values).

:func:`attach_plan` makes them on the host from the rows' spans. :class:`HistoryPlan` is the
device-side view that layers use: gathering the real ids (:meth:`HistoryPlan.real_ids`),
putting per-position results back in the padded layout (:meth:`HistoryPlan.to_padded`),
summing them per row (:meth:`HistoryPlan.sum_rows`), giving each position its row's vector
(:meth:`HistoryPlan.per_position`) and running an encoder per length bucket
(:meth:`HistoryPlan.encode_in_buckets`). None of them reads a tensor back to the host.

Three exact ways of skipping padding build on it (every layer using them gives the same
outputs as the unpacked layer, up to float rounding):

* **trimming** (:func:`trimmed_width`): the loader drops the leading columns that are padding
  in every row of the batch, rounded up to a width of the bucket ladder;
* **length buckets** (:meth:`HistoryPlan.encode_in_buckets`): rows grouped by span into the
  ladder's widths (``8, 16, 32, ..., W``), each group encoded over its last ``w`` columns only;
* **jagged positions**: per-position work (the item encoder, DIN's scoring MLP, QIN's key and
  value maps) runs on the real positions only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fuxictr_mmctr.data.schema import ITEM_SEQ, PADDING_ID

#: Narrowest width of the bucket ladder: below it the cost of one more group outweighs the
#: padding positions it saves.
MIN_BUCKET_WIDTH = 8
#: Fewest slots a plan carries (fillers make up the difference): a compiler specialises sizes 0
#: and 1, so a dynamic slot count of at least 2 keeps one graph for every batch.
MIN_SLOTS = 2
#: The batch keys of a plan; :data:`BUCKETS_KEY` stays on the host.
LENGTHS_KEY, SLOTS_KEY, ORDER_KEY, BUCKETS_KEY = ("history_lengths", "history_slots",
                                                  "history_order", "history_buckets")
PLAN_KEYS = (LENGTHS_KEY, SLOTS_KEY, ORDER_KEY, BUCKETS_KEY)


def bucket_ladder(length: int, min_width: int = MIN_BUCKET_WIDTH) -> list[int]:
    """Bucket widths for histories of ``length`` positions: powers of two from ``min_width``,
    then ``length`` itself (``100 -> [8, 16, 32, 64, 100]``; ``6 -> [6]``)."""
    widths, width = [], min(int(min_width), int(length))
    while width < length:
        widths.append(width)
        width *= 2
    widths.append(int(length))
    return widths


def trimmed_width(longest_span: int, length: int, min_width: int = MIN_BUCKET_WIDTH) -> int:
    """The ladder width that holds ``longest_span`` positions (at least one column is kept)."""
    for width in bucket_ladder(length, min_width):
        if width >= max(int(longest_span), 1):
            return width
    return int(length)


def history_spans(real: torch.Tensor) -> torch.Tensor:
    """Positions from each row's first real item to the end: ``(B, L) bool -> (B,) int64``.

    Left padding makes this the row's length; a row with no real item has span 0. Real items
    after a gap (not the data contract, but harmless) stay inside the span.
    """
    length = real.shape[-1]
    first = real.to(torch.uint8).argmax(dim=-1)               # first True (0 when none)
    return torch.where(real.any(dim=-1), length - first, torch.zeros_like(first))


def span_of_rows(item_seq: np.ndarray) -> np.ndarray:
    """:func:`history_spans` of a whole split's ``item_seq`` (padding id 0), on the host in
    chunks: ``(N, L) int -> (N,) int16``."""
    spans = np.zeros(item_seq.shape[0], dtype=np.int16)
    chunk = 1 << 16
    for start in range(0, len(spans), chunk):
        real = torch.from_numpy(np.asarray(item_seq[start:start + chunk]) != PADDING_ID)
        spans[start:start + chunk] = history_spans(real).numpy()
    return spans


def plan_of_spans(spans: np.ndarray, width: int) -> dict:
    """The plan of a batch whose rows have ``spans`` (``(B,)``, each ``<= width``) and whose
    history is ``width`` columns wide: ``{key: int64 tensor on the host}`` (module docstring).
    Numpy only: no tensor is read."""
    spans = np.minimum(np.asarray(spans, dtype=np.int64), int(width))
    rows = len(spans)
    total = int(spans.sum())
    row_of = np.repeat(np.arange(rows, dtype=np.int64), spans)                  # (N,)
    first_slot = np.cumsum(spans) - spans                                        # (B,)
    column = (int(width) - spans)[row_of] + np.arange(total) - first_slot[row_of]
    slots = np.full(max(total, MIN_SLOTS), rows * int(width), dtype=np.int64)
    slots[:total] = row_of * int(width) + column
    ladder = bucket_ladder(int(width))
    bucket = np.searchsorted(np.asarray(ladder), spans, side="left")             # (B,)
    order = np.argsort(bucket, kind="stable").astype(np.int64)
    sizes = np.bincount(bucket, minlength=len(ladder))
    return {LENGTHS_KEY: torch.from_numpy(spans), SLOTS_KEY: torch.from_numpy(slots),
            ORDER_KEY: torch.from_numpy(order),
            BUCKETS_KEY: torch.from_numpy(np.concatenate([[int(width)], sizes]).astype(np.int64))}


def plan_of_history(item_seq: torch.Tensor) -> dict:
    """The plan of a batch that came without one, from its ``(B, W)`` ids: reads them on the
    host (a device sync for ids on a GPU: the loader's batches carry their plan instead)."""
    spans = history_spans(item_seq != PADDING_ID).cpu().numpy()
    plan = plan_of_spans(spans, item_seq.shape[-1])
    return {key: (value if key == BUCKETS_KEY else value.to(item_seq.device))
            for key, value in plan.items()}


def with_plan(batch: dict) -> dict:
    """``batch`` (a dict with ``item_seq``) and its history plan (:func:`plan_of_history`)."""
    return {**batch, **plan_of_history(batch[ITEM_SEQ])}


def without_plan(batch: dict) -> dict:
    """``batch`` without its history plan (to change its ``item_seq``, then make a new one)."""
    return {key: value for key, value in batch.items() if key not in PLAN_KEYS}


def has_plan(batch: dict) -> bool:
    """Whether ``batch`` carries a history plan."""
    return SLOTS_KEY in batch


@dataclass
class HistoryPlan:
    """The device-side view of a batch's plan (module docstring).

    Attributes:
        lengths: ``(B,) int64`` spans.
        slots: ``(N',) int64`` flat positions ``row * W + column``; fillers ``B * W``.
        order: ``(B,) int64`` rows by bucket, or ``None`` (no bucket plan).
        buckets: rows per width of ``bucket_ladder(W)``, or ``None`` (then the layers that
            group rows by length run the whole batch at width ``W``: under ``torch.compile``,
            which should not specialise on host-side counts, and after a truncation).
        width: ``W``.
    """

    lengths: torch.Tensor
    slots: torch.Tensor
    order: torch.Tensor | None
    buckets: tuple | None
    width: int

    @classmethod
    def of_batch(cls, batch: dict, width: int, host_buckets: bool = True) -> HistoryPlan:
        """The plan ``batch`` carries, for a history ``width`` columns wide;
        ``host_buckets=False`` leaves the host-side numbers unread (under ``torch.compile``).

        A plan made for another width (``item_seq`` replaced after the plan was made) is a
        ``ValueError``."""
        buckets = None
        host = batch.get(BUCKETS_KEY) if host_buckets else None
        if host is not None and host.device.type == "cpu":
            made_for, *buckets = host.tolist()            # a host tensor: no device sync
            if made_for != int(width):
                raise ValueError(f"the batch's history plan was made for {made_for} history "
                                 f"columns but item_seq has {width}: make the plan again "
                                 f"(history_plan.with_plan) after changing item_seq")
            buckets = tuple(buckets)
        return cls(batch[LENGTHS_KEY], batch[SLOTS_KEY], batch.get(ORDER_KEY), buckets, width)

    @property
    def num_rows(self) -> int:
        return self.lengths.shape[0]

    @property
    def rows(self) -> torch.Tensor:
        """``(N',) int64``: the row of each slot (``B`` for a filler)."""
        return torch.div(self.slots, self.width, rounding_mode="floor")

    def check(self, item_seq: torch.Tensor) -> None:
        """Stop when the plan does not describe ``item_seq (B, W)`` (the ids were changed after
        the plan was made): the spans must agree. The check is queued on the device
        (``torch._assert_async``), so it costs no host sync; on a GPU a mismatch surfaces at
        the next sync."""
        spans = history_spans(item_seq != PADDING_ID)
        torch._assert_async(torch.all(spans == self.lengths),
                            "the batch's history plan does not describe its item_seq (the ids "
                            "changed after the plan was made: history_plan.without_plan, then "
                            "make it again)")

    def truncated(self, keep: int) -> HistoryPlan:
        """The plan after keeping the last ``keep`` of the ``W`` columns (``keep < W``): slots
        left of them become fillers; no bucket plan (the ladder of ``keep`` differs)."""
        rows = self.rows
        column = self.slots - rows * self.width - (self.width - keep)
        kept = (column >= 0) & (rows < self.num_rows)
        filler = torch.full_like(self.slots, self.num_rows * keep)
        slots = torch.where(kept, rows * keep + column, filler)
        return HistoryPlan(self.lengths.clamp(max=keep), slots, None, None, keep)

    def real_ids(self, item_seq: torch.Tensor) -> torch.Tensor:
        """The ids at the slots: ``(B, W) -> (N',)`` (fillers get the padding id)."""
        return F.pad(item_seq.reshape(-1), (0, 1), value=PADDING_ID).index_select(0, self.slots)

    def to_padded(self, values: torch.Tensor) -> torch.Tensor:
        """Per-slot values in the padded layout: ``(N', ...) -> (B, W, ...)``, zeros at padding;
        differentiable in ``values``."""
        rows, width = self.num_rows, self.width
        out = values.new_zeros((rows * width + 1,) + tuple(values.shape[1:]))
        out = out.index_copy(0, self.slots, values)
        return out[:-1].view((rows, width) + tuple(values.shape[1:]))

    def to_padded_scores(self, values: torch.Tensor) -> torch.Tensor:
        """:meth:`to_padded` of one value per slot: ``(N',) -> (B, W)``."""
        return self.to_padded(values.unsqueeze(-1)).squeeze(-1)

    def sum_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of each row's slots: ``(N', ...) -> (B, ...)`` (zeros for a row without real
        positions); accumulates in ``values``' dtype."""
        out = values.new_zeros((self.num_rows + 1,) + tuple(values.shape[1:]))
        return out.index_add(0, self.rows, values)[:-1]

    def per_position(self, values: torch.Tensor) -> torch.Tensor:
        """Each slot's row of a per-row tensor: ``(B, ...) -> (N', ...)`` (zeros for fillers)."""
        padded = torch.cat([values, values.new_zeros((1,) + tuple(values.shape[1:]))])
        return padded.index_select(0, self.rows)

    def encode_in_buckets(self, encode, pool):
        """Encode each row over its last ``w`` columns only, ``w`` its span's bucket width, and
        pool: what ``pool(encode(None, 0))`` gives, without computing the skipped padding.

        Args:
            encode: ``encode(rows, start) -> (b, W - start, T)``: the encoder outputs of the
                rows ``rows`` (``(b,)`` int64, or ``None`` for every row) over columns
                ``start..W-1``. An output at a real position may depend only on real positions
                (padding keys ignored, no positions counted from the left), and a row without
                real items must keep one key inside its bucket.
            pool: ``pool(encoded (b, w, T), rows, start) -> (b, P)``; it must ignore the
                outputs at padding positions (zero them or leave them out).

        Returns ``(B, P)`` in batch order. Without a bucket plan (``buckets`` is ``None``) the
        whole batch is encoded at width ``W``. The group sizes are host-side numbers of the
        plan: no device sync.
        """
        used = [] if self.buckets is None else [i for i, size in enumerate(self.buckets) if size]
        if not used:        # no bucket plan: the whole batch at width W
            return pool(encode(None, 0), None, 0)
        ladder = bucket_ladder(self.width)
        if len(used) == 1:  # one group: no gather, no reordering
            start = self.width - ladder[used[0]]
            return pool(encode(None, start), None, start)
        parts, first = [], 0
        for index, size in enumerate(self.buckets):
            if size:
                rows = self.order[first:first + size]
                start = self.width - ladder[index]
                parts.append(pool(encode(rows, start), rows, start))
                first += size
        inverse = torch.empty_like(self.order).scatter_(
            0, self.order, torch.arange(self.num_rows, device=self.order.device))
        return torch.cat(parts).index_select(0, inverse)                    # batch order


@dataclass
class JaggedHistory:
    """A batch's encoded history kept at its real positions, with the dense view on demand.

    Attributes:
        values: ``(N', D)`` the encoded items at the plan's slots (zeros for fillers).
        real: ``(N',) bool``, ``True`` where the slot holds an item (``False`` for fillers
            and for padding ids inside a span, which the data contract does not make).
        plan: the batch's :class:`HistoryPlan`.
    """

    values: torch.Tensor
    real: torch.Tensor
    plan: HistoryPlan

    def __post_init__(self):
        self._dense = None

    def dense(self) -> torch.Tensor:
        """``(B, W, D)``, zeros at padding (scattered once, then kept)."""
        if self._dense is None:
            self._dense = self.plan.to_padded(self.values)
        return self._dense


__all__ = [
    "BUCKETS_KEY",
    "LENGTHS_KEY",
    "MIN_BUCKET_WIDTH",
    "MIN_SLOTS",
    "ORDER_KEY",
    "PLAN_KEYS",
    "SLOTS_KEY",
    "HistoryPlan",
    "JaggedHistory",
    "bucket_ladder",
    "has_plan",
    "history_spans",
    "plan_of_history",
    "plan_of_spans",
    "span_of_rows",
    "trimmed_width",
    "with_plan",
    "without_plan",
]
