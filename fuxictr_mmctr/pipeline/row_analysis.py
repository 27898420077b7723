"""Per-row analysis of scores on a dataset folder's split: slices, a paired bootstrap over
users, and training-free baselines.

Everything here is a function of a dataset folder (the contract of
:mod:`fuxictr_mmctr.data.schema`: ``train/valid/test.parquet`` and ``item_info.parquet``) and,
for a model, of its scores on a split in file order. Nothing is random beyond the fixed
bootstrap seed, so every machine holding the same folder gets the same numbers.
``truth.parquet`` is read only for the test AUCs of :func:`training_free_aucs`, never for a score.

Train item sets and popularity
    A user's *train item set* holds every real item id (``> 0``) in the ``item_seq`` of the
    user's train rows and the ``item_id`` of every train row of the user with ``label`` 1
    (negative train targets are not in it). The incidence matrix ``X (U, I)`` holds 1 where
    item ``i`` is in user ``u``'s set (``I`` = largest item id of the train split + 1). An
    item's *popularity*, its count of train-period occurrences, is the number of users whose
    train item set holds it (the column sums of ``X``): a user counts once per item, however
    many of the user's train rows repeat it in their (sliding-window) histories, and whether it
    was a positive target, a history item or both.

Slices of a split's rows (:func:`split_slices`)
    ``history_length``: the count of real ids in the row's ``item_seq``, in buckets
    :data:`HISTORY_BUCKETS` (``0`` is a bucket only where such rows exist).
    ``popularity``: the row's target item is ``cold`` (popularity 0: never a positive train
    target nor in any train history), ``head`` or ``tail`` (the other items seen in train).
    Head items: sort the items by popularity, most popular first; ``t`` is the popularity of
    the first item at which the running sum reaches half of the total popularity; the head is
    every item of popularity ``>= t`` (so items tied at ``t`` are all head, and the split never
    depends on how equal counts are ordered).

Paired bootstrap over users (:func:`bootstrap_aucs`)
    :data:`BOOTSTRAP_RESAMPLES` resamples of the split's users, the same for every run scored on
    the same split: with ``users`` the sorted unique user ids (``U`` of them) and
    ``rng = numpy.random.default_rng(BOOTSTRAP_SEED)``, resample ``r`` (``r = 0, 1, ...`` in
    order) is ``counts_r = bincount(rng.integers(0, U, size=U), minlength=U)``: ``U`` users
    drawn with replacement, i.e. multinomial ``(U; 1/U, ..., 1/U)`` counts per user. A run's
    AUC on resample ``r`` is its AUC with every row weighted by its user's count (the
    tie-averaged weighted AUC, as ``sklearn.metrics.roc_auc_score(sample_weight=...)``).
    Two runs are compared by the per-resample difference of their (seed-mean) AUC vectors
    (:func:`paired_difference`).

Training-free baselines (:func:`heuristic_scores`), one score per row of a split
    ``popularity``: the target's popularity. ``likes_level``: the row's ``likes_level``.
    ``title_cosine``: cosine between the target's ``item_emb_d128`` vector and the mean of the
    history items' vectors (one term per real history position; 0 for an empty history or a
    zero vector). ``cooccurrence``: mean over the real history positions ``h`` of
    ``log1p(C[h, target])``, ``C = X^T X`` (``C[h, t]``: users whose train item set holds both
    ``h`` and ``t``); 0 for an empty history.
"""
from __future__ import annotations

import math
import os
from functools import cached_property

import numpy as np

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError, location

#: History-length buckets: the bucket of ``n`` real history items is the last lower bound
#: ``<= n`` of :data:`HISTORY_LOWER_BOUNDS`.
HISTORY_BUCKETS = ("0", "1", "2-3", "4-7", "8-15", "16+")
HISTORY_LOWER_BOUNDS = (0, 1, 2, 4, 8, 16)
POPULARITY_BUCKETS = ("cold", "tail", "head")
#: Slice kinds, in the order tables show them.
SLICE_KINDS = ("history_length", "popularity")
#: Version of the slice definitions above; records of another version are not compared.
SLICES_VERSION = 1
BOOTSTRAP_SEED = 20250101
BOOTSTRAP_RESAMPLES = 1000
#: Resamples scored together: bounds memory to a few ``(chunk, rows)`` float64 arrays.
RESAMPLE_CHUNK = 20
#: Confidence level of the interval of a paired difference.
CONFIDENCE = 0.95
#: Training-free baselines, in the order tables show them.
HEURISTICS = ("popularity", "likes_level", "title_cosine", "cooccurrence")
#: Train rows read at a time while building the train item sets.
TRAIN_BATCH_ROWS = 1 << 16
#: Rows per chunk of the title cosine (two ``(chunk, D)`` float64 arrays at a time).
COSINE_CHUNK_ROWS = 1 << 15
#: Target items per block of the co-occurrence counts (a dense ``(block, items)`` float32).
COOCCURRENCE_BLOCK = 256

#: ``{kind: {bucket name: (N,) bool mask of the split's rows}}``.
Slices = dict


# ---------------------------------------------------------------------- reading a folder
class SplitRows:
    """The columns of one split that the analysis reads (``N`` rows, history length ``L``).

    ``user_id (N,) int64``, ``item_seq (N, L) int64`` (0 = padding, most recent last),
    ``item_id (N,) int64``, ``likes_level (N,) int64``, ``label (N,) float64`` or ``None`` where
    the split has no label column. ``path`` is the file read.
    """

    def __init__(self, path, user_id, item_seq, item_id, likes_level, label=None):
        self.path = path
        self.user_id, self.item_seq, self.item_id = user_id, item_seq, item_id
        self.likes_level, self.label = likes_level, label

    def __len__(self) -> int:
        return len(self.user_id)

    @property
    def history_lengths(self) -> np.ndarray:
        """``(N,) int64``: real ids in each row's ``item_seq``."""
        return (self.item_seq > contract.PADDING_ID).sum(axis=1)


def read_split(folder, split: str) -> SplitRows:
    """``folder/<split>.parquet`` as a :class:`SplitRows`; a missing file or column, a ragged
    ``item_seq`` or non-integer ids are a :class:`UserError`."""
    import pyarrow.parquet as pq

    path = os.path.join(os.fspath(folder), contract.split_file(split))
    needed = (contract.USER_ID, contract.ITEM_SEQ, contract.ITEM_ID, contract.LIKES_LEVEL)
    names = _columns_of(path, needed)
    table = pq.read_table(path, columns=list(needed) + [contract.LABEL] * (contract.LABEL in names))
    label = None
    if contract.LABEL in names:
        label = _numbers(table, contract.LABEL, path).astype(np.float64)
    return SplitRows(path, _integers(table, contract.USER_ID, path),
                     _int_lists(table, contract.ITEM_SEQ, path),
                     _integers(table, contract.ITEM_ID, path),
                     _integers(table, contract.LIKES_LEVEL, path), label)


def _columns_of(path: str, needed) -> list[str]:
    """The column names of the parquet file ``path``, which must hold ``needed``."""
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    names = pq.read_schema(path).names
    for name in needed:
        if name not in names:
            raise UserError(f"{location(path, name)}: column missing")
    return names


def _numbers(table, name: str, path) -> np.ndarray:
    """A scalar column ``(N,)`` as numpy; nulls are a :class:`UserError`."""
    column = table.column(name)
    if column.null_count:
        raise UserError(f"{location(path, name)}: missing values")
    return column.to_numpy()


def _integers(table, name: str, path) -> np.ndarray:
    """An integer column as ``(N,) int64``."""
    values = _numbers(table, name, path)
    if not np.issubdtype(values.dtype, np.integer):
        raise UserError(f"{location(path, name)}: dtype is {values.dtype}, expected integers")
    return values.astype(np.int64, copy=False)


def _int_lists(table, name: str, path, first_row: int = 0) -> np.ndarray:
    """A fixed-length integer list column as ``(N, L) int64`` (``first_row``: the file row of
    the table's first row, for error messages)."""
    return _lists(table, name, path, first_row, integers=True).astype(np.int64, copy=False)


def _lists(table, name: str, path, first_row: int = 0, integers: bool = True) -> np.ndarray:
    """A fixed-length list column of integers (or of numbers) as an ``(N, L)`` array; a
    ragged list, a null or another value type is a :class:`UserError`."""
    import pyarrow as pa

    column = table.column(name).combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise UserError(f"{location(path, name)}: dtype is {column.type}, expected a list")
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(len(column), column.type.list_size)
    else:
        lengths = np.diff(column.offsets.to_numpy())
    ragged = np.flatnonzero(lengths != lengths[0])
    if ragged.size:
        row = int(ragged[0])
        raise UserError(f"{location(path, name, first_row + row)}: list has length "
                        f"{lengths[row]}, row {first_row} has {lengths[0]} (a fixed-length, "
                        f"left-padded list)")
    flat = column.flatten()
    numeric = pa.types.is_integer(flat.type) or (not integers and pa.types.is_floating(flat.type))
    if flat.null_count or not numeric:
        raise UserError(f"{location(path, name)}: expected lists of "
                        f"{'integers' if integers else 'numbers'} without nulls, got {column.type}")
    return flat.to_numpy().reshape(len(column), int(lengths[0]))


def read_item_vectors(folder) -> np.ndarray:
    """``(V, D) float64``: row ``i`` is item ``i``'s ``item_emb_d128`` vector (``V`` = largest
    item id of ``folder/item_info.parquet`` + 1; rows of ids it lacks are zeros)."""
    import pyarrow.parquet as pq

    path = os.path.join(os.fspath(folder), contract.split_file(contract.ITEM_INFO))
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    names = pq.read_schema(path).names
    for name in (contract.ITEM_ID, contract.ITEM_EMB):
        if name not in names:
            raise UserError(f"{location(path, name)}: column missing")
    table = pq.read_table(path, columns=[contract.ITEM_ID, contract.ITEM_EMB])
    ids = _integers(table, contract.ITEM_ID, path)
    rows = _lists(table, contract.ITEM_EMB, path, integers=False).astype(np.float64)
    if len(ids) == 0 or ids.min() < 0:
        raise UserError(f"{location(path, contract.ITEM_ID)}: no items, or a negative id")
    vectors = np.zeros((int(ids.max()) + 1, rows.shape[1]))
    vectors[ids] = rows
    return vectors


class DatasetRows:
    """A dataset folder's splits, train item sets and item vectors, each read once, on first
    use (the train split only as its item sets). ``folder``: the folder holding
    ``train/valid/test.parquet`` and ``item_info.parquet``."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self._splits: dict[str, SplitRows] = {}

    def split(self, name: str) -> SplitRows:
        """The rows of split ``name`` (``train``, ``valid`` or ``test``)."""
        if name not in self._splits:
            self._splits[name] = read_split(self.folder, name)
        return self._splits[name]

    @cached_property
    def incidence(self):
        """``X (U, I)``: the train item sets (see the module docstring), scipy CSR."""
        return train_item_sets(os.path.join(self.folder, contract.split_file("train")))

    @cached_property
    def popularity(self) -> np.ndarray:
        """``(I,) int64``: users whose train item set holds each item."""
        return item_popularity(self.incidence)

    @cached_property
    def item_vectors(self) -> np.ndarray:
        """``(V, D) float64``: item ``i``'s vector in row ``i``."""
        return read_item_vectors(self.folder)

    def slices(self, split: str = "valid") -> Slices:
        """The slices of ``split``'s rows (:func:`split_slices`)."""
        return split_slices(self.split(split), self.popularity)

    def heuristic_scores(self, split: str) -> dict[str, np.ndarray]:
        """``{name: (N,) float64}`` of every baseline of :data:`HEURISTICS` on ``split``."""
        rows = self.split(split)
        return {
            "popularity": lookup(self.popularity, rows.item_id).astype(np.float64),
            "likes_level": rows.likes_level.astype(np.float64),
            "title_cosine": title_cosine(rows.item_seq, rows.item_id, self.item_vectors,
                                         rows.path),
            "cooccurrence": cooccurrence(rows.item_seq, rows.item_id, self.incidence),
        }


# ---------------------------------------------------------------------- train item sets
def train_item_sets(path):
    """Binary incidence ``X (U, I)`` (scipy CSR, float32: its sums stay exact below 2**24
    users) of the users' train item sets, from the train split at ``path``.

    Row ``u`` is the ``u``-th smallest train user id; ``I`` is the largest item id of the train
    split + 1. See the module docstring for what a train item set holds. The split is read
    :data:`TRAIN_BATCH_ROWS` rows at a time, each batch's (user, item) pairs made distinct
    before they are kept, so its ``item_seq`` is never held whole.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from scipy import sparse

    path = os.fspath(path)
    names = _columns_of(path, (contract.USER_ID, contract.ITEM_SEQ, contract.ITEM_ID))
    users = _distinct(_integers(pq.read_table(path, columns=[contract.USER_ID]),
                                contract.USER_ID, path))
    columns = [contract.USER_ID, contract.ITEM_SEQ, contract.ITEM_ID]
    columns += [contract.LABEL] * (contract.LABEL in names)
    kept, pending, first_row = np.zeros(0, dtype=np.int64), [], 0
    for batch in pq.ParquetFile(path).iter_batches(TRAIN_BATCH_ROWS, columns=columns):
        table = pa.Table.from_batches([batch])
        pending.append(_user_item_keys(table, users, path, first_row))
        first_row += table.num_rows
        if sum(len(keys) for keys in pending) > max(len(kept), TRAIN_BATCH_ROWS):
            kept, pending = _distinct(np.concatenate([kept, *pending])), []
    kept = _distinct(np.concatenate([kept, *pending]))
    user_rows, items = kept >> _ITEM_BITS, kept & (2**_ITEM_BITS - 1)
    indptr = np.searchsorted(user_rows, np.arange(len(users) + 1))   # keys sort by user
    num_items = int(items.max()) + 1 if items.size else 1
    return sparse.csr_matrix((np.ones(len(kept), dtype=np.float32), items.astype(np.int32),
                              indptr), shape=(len(users), num_items))


#: Bits of an item id in a (user, item) key: ``user_row << _ITEM_BITS | item``.
_ITEM_BITS = 31


def _user_item_keys(table, users: np.ndarray, path: str, first_row: int) -> np.ndarray:
    """Sorted distinct ``(user, item)`` keys ``(k,) int64`` of a batch of train rows: each real
    history position, and the target of each row labelled 1. ``users (U,)``: the sorted train
    user ids."""
    user_row = np.searchsorted(users, _integers(table, contract.USER_ID, path))
    history = _int_lists(table, contract.ITEM_SEQ, path, first_row)        # (n, L)
    target = _integers(table, contract.ITEM_ID, path)
    positive = (_numbers(table, contract.LABEL, path) > 0
                if contract.LABEL in table.column_names else np.zeros(len(target), dtype=bool))
    real = history > contract.PADDING_ID
    items = np.concatenate([history[real], target[positive]])
    if items.size and (items.min() < 0 or items.max() >= 2**_ITEM_BITS):
        raise UserError(f"{path}: item id {items.min() if items.min() < 0 else items.max()} "
                        f"is out of range [0, 2**31)")
    user_rows = np.concatenate([np.repeat(user_row, real.sum(axis=1)), user_row[positive]])
    return _distinct((user_rows.astype(np.int64) << _ITEM_BITS) | items)


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``values (n,)`` (one sort; faster than ``np.unique``)."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def item_popularity(incidence) -> np.ndarray:
    """``(I,) int64``: users whose train item set holds each item (column sums of ``X (U, I)``)."""
    return np.bincount(incidence.indices, minlength=incidence.shape[1]).astype(np.int64)


def lookup(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``values[ids]`` with 0 for ids beyond ``values`` (items the train split never holds).
    ``values (I,)``, ``ids`` any shape of non-negative ints; returns ``ids``' shape."""
    inside = ids < len(values)
    return np.where(inside, values[np.where(inside, ids, 0)], 0)


def head_items(popularity: np.ndarray) -> np.ndarray:
    """``(I,) bool``: the head items (module docstring) of ``popularity (I,)``."""
    total = popularity.sum()
    if total <= 0:
        return np.zeros(len(popularity), dtype=bool)
    descending = np.sort(popularity)[::-1]
    threshold = descending[np.searchsorted(np.cumsum(descending), total / 2)]
    return (popularity >= threshold) & (popularity > 0)


# ---------------------------------------------------------------------- slices
def history_buckets(lengths: np.ndarray) -> np.ndarray:
    """``(N,) int``: index into :data:`HISTORY_BUCKETS` of each history length ``(N,)``."""
    return np.searchsorted(np.asarray(HISTORY_LOWER_BOUNDS), lengths, side="right") - 1


def popularity_buckets(item_id: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """``(N,) int``: index into :data:`POPULARITY_BUCKETS` of each target ``item_id (N,)``."""
    counts = lookup(popularity, item_id)
    head = lookup(head_items(popularity), item_id).astype(bool)
    return np.where(counts == 0, 0, np.where(head, 2, 1))


def split_slices(rows: SplitRows, popularity: np.ndarray) -> Slices:
    """``{kind: {bucket: (N,) bool}}`` for :data:`SLICE_KINDS`; every bucket is listed, in
    order, except history length ``0`` where no row has an empty history."""
    history = history_buckets(rows.history_lengths)
    target = popularity_buckets(rows.item_id, popularity)
    slices = {"history_length": {name: history == index
                                 for index, name in enumerate(HISTORY_BUCKETS)},
              "popularity": {name: target == index
                             for index, name in enumerate(POPULARITY_BUCKETS)}}
    if not slices["history_length"]["0"].any():
        del slices["history_length"]["0"]
    return slices


def slice_counts(slices: Slices) -> dict:
    """``{kind: {bucket: rows}}`` of ``slices``."""
    return {kind: {name: int(mask.sum()) for name, mask in buckets.items()}
            for kind, buckets in slices.items()}


def slice_aucs(labels: np.ndarray, scores: np.ndarray, slices: Slices) -> dict:
    """``{kind: {bucket: {"auc": float | None, "rows": int}}}``: the AUC of ``scores (N,)``
    against ``labels (N,)`` on each bucket's rows (6 decimals; ``None`` where the bucket has no
    rows or one class)."""
    from fuxictr_mmctr.training.metrics import auc

    result = {}
    for kind, buckets in slices.items():
        result[kind] = {}
        for name, mask in buckets.items():
            positives = labels[mask] > 0
            both = 0 < positives.sum() < positives.size
            value = round(auc(labels[mask], scores[mask]), 6) if both else None
            result[kind][name] = {"auc": value, "rows": int(mask.sum())}
    return result


# ---------------------------------------------------------------------- paired bootstrap
def resample_counts(num_users: int, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED, chunk: int = RESAMPLE_CHUNK):
    """Yield the resamples' per-user counts, ``(c, num_users) int64`` blocks of up to ``chunk``
    resamples, ``resamples`` rows in all (the definition is in the module docstring: the
    blocks never change the draws)."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        yield np.stack([np.bincount(rng.integers(0, num_users, size=num_users),
                                    minlength=num_users) for _ in range(size)])


def weighted_auc(labels, scores, weights) -> float:
    """The AUC of ``scores (N,)`` against ``labels (N,)`` with row weights ``weights (N,)``
    (ties count one half); ``nan`` when either class has zero weight."""
    ranked = _RankedRows(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    weights = np.asarray(weights, dtype=np.float64)
    return float(ranked.aucs(weights[ranked.positive][None, :],
                             weights[ranked.negative][None, :])[0])


class _RankedRows:
    """Rows ranked by score once, so each weighting's AUC is a few O(N) passes.

    From ``labels (N,)`` and ``scores (N,)``: ``positive (P,)`` and ``negative (M,)``, the row
    indices of each class in ascending score order; ``below (P,)`` and ``not_above (P,)``, for
    each positive row, how many negative rows score lower, and lower or equal.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        order = np.argsort(scores, kind="stable")
        is_positive = labels[order] > 0
        self.positive, self.negative = order[is_positive], order[~is_positive]
        negative_scores, positive_scores = scores[self.negative], scores[self.positive]
        self.below = np.searchsorted(negative_scores, positive_scores, side="left")
        self.not_above = np.searchsorted(negative_scores, positive_scores, side="right")
        self.ties = bool((self.below != self.not_above).any())

    def aucs(self, positive_weights: np.ndarray, negative_weights: np.ndarray) -> np.ndarray:
        """``(c,)``: the weighted AUC of each of ``c`` weightings, given as the weights of the
        positive rows ``(c, P)`` and of the negative rows ``(c, M)`` (in this ranking's order).

        With ``W(k)`` the weight of the ``k`` lowest negatives, the AUC is
        ``sum_i w_i (W(below_i) + W(not_above_i)) / 2 / (sum w_pos * sum w_neg)``: the
        Mann-Whitney statistic, ties counted one half. Integer weights keep every sum exact.
        """
        cumulative = np.zeros((len(negative_weights), negative_weights.shape[1] + 1))
        np.cumsum(negative_weights, axis=1, out=cumulative[:, 1:])
        below = cumulative[:, self.below]
        middle = below + cumulative[:, self.not_above] if self.ties else 2 * below
        numerator = np.einsum("ij,ij->i", positive_weights, middle) / 2
        denominator = positive_weights.sum(axis=1) * cumulative[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)


def bootstrap_aucs(labels, scores, user_ids, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``(resamples,) float64``: the AUC of ``scores (N,)`` against ``labels (N,)`` on each
    resample of the users ``user_ids (N,)`` (module docstring); ``nan`` on a resample that
    draws one class only."""
    user_ids = np.asarray(user_ids)
    _, row_user = np.unique(user_ids, return_inverse=True)
    num_users = int(row_user.max()) + 1 if len(row_user) else 0
    ranked = _RankedRows(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    row_user = row_user.reshape(-1)
    positive_users, negative_users = row_user[ranked.positive], row_user[ranked.negative]
    aucs = [ranked.aucs(counts[:, positive_users].astype(np.float64),
                        counts[:, negative_users].astype(np.float64))
            for counts in resample_counts(num_users, resamples, seed)]
    return np.concatenate(aucs) if aucs else np.zeros(0)


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """How ``a`` differs from ``b``, two ``(R,)`` per-resample AUC vectors on the same
    resamples (e.g. seed means of two expids).

    Returns ``{"low", "high", "p_value", "significant"}``: the central ``confidence`` interval
    of the per-resample differences ``a - b``, the two-sided bootstrap p-value
    ``min(1, 2 * (min(#(d <= 0), #(d >= 0)) + 1) / (R + 1))``, and whether the interval
    excludes 0. Resamples where either is ``nan`` are left out.
    """
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    difference = difference[np.isfinite(difference)]
    if difference.size == 0:
        return {"low": None, "high": None, "p_value": None, "significant": False}
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(difference, [tail, 100 - tail])
    extreme = min(int((difference <= 0).sum()), int((difference >= 0).sum()))
    p_value = min(1.0, 2 * (extreme + 1) / (difference.size + 1))
    return {"low": float(low), "high": float(high), "p_value": float(p_value),
            "significant": bool(low > 0 or high < 0)}


# ---------------------------------------------------------------------- baselines
def heuristic_scores(dataset_folder, split: str) -> dict[str, np.ndarray]:
    """``{name: (N,) float64}``: each training-free baseline of :data:`HEURISTICS` (module
    docstring) on the rows of ``split`` (``valid`` or ``test``) of ``dataset_folder``. Reads
    the folder's train split, ``split`` and item_info only."""
    return DatasetRows(dataset_folder).heuristic_scores(split)


def _history_positions(item_seq: np.ndarray):
    """``(rows, items)``: the row and item id of every real position of ``item_seq (N, L)``,
    row-major (each ``(P,)``)."""
    rows, positions = np.nonzero(item_seq > contract.PADDING_ID)
    return rows, item_seq[rows, positions]


def title_cosine(item_seq: np.ndarray, item_id: np.ndarray, vectors: np.ndarray,
                 where: str = "item_info") -> np.ndarray:
    """``(N,) float64``: cosine between each target's vector and the mean of its history's
    vectors. ``item_seq (N, L)``, ``item_id (N,)``, ``vectors (V, D)`` (row = item id); 0 for
    an empty history or a zero vector. An id beyond ``vectors`` is a :class:`UserError`."""
    from scipy import sparse

    rows, items = _history_positions(item_seq)
    largest = max(int(items.max()) if items.size else 0, int(item_id.max()) if item_id.size else 0)
    if largest >= len(vectors):
        raise UserError(f"{where}: item id {largest} has no row in item_info.parquet "
                        f"({len(vectors) - 1} is its largest id)")
    counts = sparse.csr_matrix((np.ones(len(rows)), (rows, items)),
                               shape=(len(item_id), len(vectors)))
    cosine = np.zeros(len(item_id))
    for start in range(0, len(item_id), COSINE_CHUNK_ROWS):  # bounds the (chunk, D) arrays
        chunk = slice(start, start + COSINE_CHUNK_ROWS)
        history = counts[chunk] @ vectors    # (n, D): the sum, a positive multiple of the mean
        target = vectors[item_id[chunk]]     # (n, D)
        norms = np.linalg.norm(history, axis=1) * np.linalg.norm(target, axis=1)
        dots = np.einsum("ij,ij->i", history, target)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine[chunk] = np.where(norms > 0, dots / norms, 0.0)
    return cosine


def cooccurrence(item_seq: np.ndarray, item_id: np.ndarray, incidence) -> np.ndarray:
    """``(N,) float64``: mean over each row's real history positions ``h`` of
    ``log1p(C[h, target])``, ``C = X^T X`` from ``incidence`` ``X (U, I)``; 0 for an empty
    history. ``item_seq (N, L)``, ``item_id (N,)``.

    ``C`` is computed for blocks of :data:`COOCCURRENCE_BLOCK` distinct targets at a time
    (``X[:, block]^T @ X``, a dense ``(block, I)``), never for all item pairs. The work is about
    the sum over users of ``|train item set|`` times the number of the split's targets in it.
    """
    num_items = incidence.shape[1]
    lengths = (item_seq > contract.PADDING_ID).sum(axis=1)
    scores = np.zeros(len(item_id))
    scored = np.flatnonzero((lengths > 0) & (item_id < num_items) & (item_id > 0))
    if scored.size == 0:
        return scores
    by_target = scored[np.argsort(item_id[scored], kind="stable")]
    targets, first = np.unique(item_id[by_target], return_index=True)
    columns = incidence.tocsc()           # (U, I), for slicing target columns
    for start in range(0, len(targets), COOCCURRENCE_BLOCK):
        block = targets[start:start + COOCCURRENCE_BLOCK]
        counts = (columns[:, block].T.tocsr() @ incidence).toarray()   # (b, I): C[block]
        stop = first[start + len(block)] if start + len(block) < len(targets) else len(by_target)
        rows = by_target[first[start]:stop]
        history = item_seq[rows]                               # (n, L)
        column = np.searchsorted(block, item_id[rows])         # (n,)
        inside = (history > contract.PADDING_ID) & (history < num_items)
        values = counts[column[:, None], np.where(inside, history, 0)]   # C symmetric
        logs = np.log1p(values.astype(np.float64))
        scores[rows] = np.where(inside, logs, 0.0).sum(axis=1) / lengths[rows]
    return scores


# ---------------------------------------------------------------------- a run's record
def valid_record(scores: np.ndarray, data: DatasetRows) -> dict:
    """The record keys of a run's valid scores ``(N,)`` (file order of ``data``'s valid split)::

        {"valid_slices": {"version": 1, "history_length": {bucket: {"auc", "rows"}, ...},
                          "popularity": {...}},
         "valid_bootstrap": {"seed", "resamples", "users", "rows", "auc": [R floats or None]}}

    AUCs are rounded to 6 decimals; a resample AUC that is undefined is ``None``.
    """
    valid = data.split("valid")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if valid.label is None:
        raise UserError(f"{valid.path}: no {contract.LABEL} column; the valid split needs one")
    if len(scores) != len(valid):
        raise UserError(f"{valid.path}: {len(valid)} rows but {len(scores)} valid scores")
    slices = {"version": SLICES_VERSION, **slice_aucs(valid.label, scores, data.slices("valid"))}
    return {"valid_slices": slices,
            "valid_bootstrap": bootstrap_record(valid.label, scores, valid.user_id)}


def bootstrap_record(labels, scores, user_ids) -> dict:
    """``{"seed", "resamples", "users", "rows", "auc": [...]}``: :func:`bootstrap_aucs` of
    ``scores (N,)``, rounded to 6 decimals (``None`` for an undefined resample)."""
    aucs = bootstrap_aucs(labels, scores, user_ids)
    return {"seed": BOOTSTRAP_SEED, "resamples": BOOTSTRAP_RESAMPLES,
            "users": int(np.unique(user_ids).size), "rows": int(len(scores)),
            "auc": [round(float(value), 6) if math.isfinite(value) else None
                    for value in aucs]}


def bootstrap_vector(record_field: dict | None) -> np.ndarray | None:
    """``(R,) float64`` of a record's ``valid_bootstrap`` (``nan`` for ``None``); ``None`` when
    absent or drawn with another seed or resample count than this module's."""
    if not isinstance(record_field, dict):
        return None
    if (record_field.get("seed") != BOOTSTRAP_SEED
            or record_field.get("resamples") != BOOTSTRAP_RESAMPLES
            or len(record_field.get("auc") or []) != BOOTSTRAP_RESAMPLES):
        return None
    return np.array([np.nan if value is None else value for value in record_field["auc"]],
                    dtype=np.float64)


def training_free_aucs(dataset_folder) -> dict:
    """``{"valid": {name: AUC}, "test": {name: AUC}}`` of every baseline of :data:`HEURISTICS`
    (rounded to 4 decimals; ``test`` only where ``truth.parquet`` holds the test labels, read
    here for the AUC alone, never for a score)."""
    from sklearn.metrics import roc_auc_score

    from fuxictr_mmctr.data.scoring import TRUTH_FILE, load_test_labels

    data = DatasetRows(dataset_folder)
    labels = {"valid": data.split("valid").label}
    if os.path.exists(os.path.join(os.fspath(dataset_folder), TRUTH_FILE)):
        labels["test"] = load_test_labels(os.fspath(dataset_folder))
    return {split: {name: round(float(roc_auc_score(split_labels, scores)), 4)
                    for name, scores in data.heuristic_scores(split).items()}
            for split, split_labels in labels.items()}
