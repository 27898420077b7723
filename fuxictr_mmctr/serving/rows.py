"""JSON request rows -> the graph's id arrays; every mistake is one line naming field and row.

A request is ``{"rows": [{"item_id": 17, "item_seq": [3, 9, 4], "likes_level": 2,
"views_level": 5, "user_id": 81}, ...]}``:

* every graph input is a required field of every row (``item_id``, ``item_seq`` and the side
  features of the signature); the data's other columns (``user_id`` where it is not embedded)
  are accepted and ignored; any other field is a mistake;
* ``item_seq`` lists the history, oldest first, most recent last, at most ``max_len`` items
  (leading padding ids are dropped first); a shorter list is left-padded, an empty list is an
  empty history;
* item ids are the catalogue's own ids (mapped to item-table rows with the artifact's id map,
  when it has one); the target may not be the padding id;
* side features are integers in ``[0, vocab_size)``.

:func:`parse_rows` returns ``(columns, rows)``: ``{name: (n,) int64}`` and ``item_seq (n, w)``
with ``w`` the longest history of the request (at least 1).
"""
from __future__ import annotations

import numpy as np


class RequestError(ValueError):
    """A bad request: one line for the client (HTTP 400)."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_rows(payload, signature, item_ids) -> tuple[dict, int]:
    """Check a decoded JSON request and build the graph's inputs (module docstring).

    Args:
        payload: the decoded JSON body.
        signature: the artifact's :class:`~fuxictr_mmctr.serving.signature.Signature`.
        item_ids: the artifact's :class:`~fuxictr_mmctr.serving.artifact.ItemIds`.

    Raises :class:`RequestError` with the first mistake.
    """
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be a JSON object {{\"rows\": [...]}}, got "
                           f"{type(payload).__name__}")
    unknown = [key for key in payload if key != "rows"]
    if unknown:
        raise RequestError(f"unknown top-level field {unknown[0]!r}; the body is "
                           f"{{\"rows\": [...]}}")
    if "rows" not in payload:
        raise RequestError("field rows is missing; the body is {\"rows\": [...]}")
    rows = payload["rows"]
    if not isinstance(rows, list):
        raise RequestError(f"field rows must be a list of row objects, got "
                           f"{type(rows).__name__}")
    if not rows:
        raise RequestError("field rows is empty: send at least one row")
    history_name = signature.history_input.name
    item_name = signature.item_input.name
    sides = signature.side_inputs
    known = set(signature.input_names) | set(signature.ignored_fields)
    count = len(rows)
    targets = np.zeros(count, dtype=np.int64)
    side_values = {spec.name: np.zeros(count, dtype=np.int64) for spec in sides}
    histories = []
    for index, row in enumerate(rows):
        where = f"row {index}"
        if not isinstance(row, dict):
            raise RequestError(f"{where}: must be an object of fields, got "
                               f"{type(row).__name__}")
        for name in row:
            if name not in known:
                raise RequestError(f"{where}: unknown field {name!r} (fields: "
                                   f"{', '.join(signature.input_names)})")
        for name in signature.input_names:
            if name not in row:
                raise RequestError(f"{where}: field {name} is missing")
        for name in signature.ignored_fields:
            if name in row and not _is_int(row[name]) and row[name] is not None:
                raise RequestError(f"{where}, field {name}: expected an integer, got "
                                   f"{_describe(row[name])}")
        targets[index] = _target(row[item_name], item_ids, f"{where}, field {item_name}")
        histories.append(_history(row[history_name], item_ids, signature.max_len,
                                  f"{where}, field {history_name}"))
        for spec in sides:
            value = row[spec.name]
            if not _is_int(value):
                raise RequestError(f"{where}, field {spec.name}: expected an integer, got "
                                   f"{_describe(value)}")
            if not 0 <= value < spec.vocab_size:
                raise RequestError(f"{where}, field {spec.name}: {value} is outside "
                                   f"0..{spec.vocab_size - 1}")
            side_values[spec.name][index] = value
    width = max(1, max(len(history) for history in histories))
    item_seq = np.zeros((count, width), dtype=np.int64)
    for index, history in enumerate(histories):
        if history:
            item_seq[index, width - len(history):] = history
    columns = {item_name: targets, history_name: item_seq, **side_values}
    return columns, count


def _target(value, item_ids, where: str) -> int:
    if item_ids.is_padding(value):
        raise RequestError(f"{where}: {_describe(value)} is the padding id, not an item")
    row = item_ids.row(value)
    if row is None:
        raise RequestError(f"{where}: {_unknown(value, item_ids)}")
    return row


def _history(value, item_ids, max_len: int, where: str) -> list[int]:
    if not isinstance(value, list):
        raise RequestError(f"{where}: expected a list of item ids, got {_describe(value)}")
    start = 0
    while start < len(value) and item_ids.is_padding(value[start]):
        start += 1                                   # leading padding: the list was left-padded
    items = value[start:]
    if len(items) > max_len:
        raise RequestError(f"{where}: a history of {len(items)} items is longer than max_len "
                           f"{max_len}; send the {max_len} most recent")
    rows = []
    for position, item in enumerate(items, start=start):
        row = item_ids.row(item)
        if row is None:
            raise RequestError(f"{where}[{position}]: {_unknown(item, item_ids)}")
        rows.append(row)
    return rows


def _unknown(value, item_ids) -> str:
    """Why an item id is refused: wrong type, or not in the catalogue."""
    if item_ids.keys is None:
        if not _is_int(value):
            return f"expected an integer item id, got {_describe(value)}"
        return f"unknown item id {value} (item ids are 1..{item_ids.vocab_size - 1})"
    expected = "string" if item_ids.is_string else "integer"
    if item_ids.is_string != isinstance(value, str) or isinstance(value, bool):
        return f"expected a {expected} item id, got {_describe(value)}"
    return f"unknown item id {_describe(value)}"


def merge(parts: list[dict], input_names) -> dict:
    """Concatenate several requests' columns into one batch; histories are left-padded to the
    widest: ``[{name: (n_i,) / (n_i, w_i)}] -> {name: (sum n_i,) / (sum n_i, max w_i)}``."""
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for name in input_names:
        arrays = [part[name] for part in parts]
        if arrays[0].ndim == 2:
            width = max(array.shape[1] for array in arrays)
            arrays = [np.pad(array, ((0, 0), (width - array.shape[1], 0)))
                      if array.shape[1] < width else array for array in arrays]
        merged[name] = np.concatenate(arrays)
    return merged


__all__ = ["RequestError", "merge", "parse_rows"]
