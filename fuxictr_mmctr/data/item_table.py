"""The item side table, kept on the model's device and gathered by item id."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


class ItemTable(nn.Module):
    """Item-side features as non-trainable buffers, one row per item (row 0 = padding).

    Args:
        columns: feature name -> array of shape ``(num_rows, ...)`` (e.g. ``item_tags``
            ``(N, 5)`` int, ``item_emb_d128`` ``(N, 128)`` float32). Every array has the same
            number of rows; row ``i`` belongs to item ``i``.

    Buffers are not saved in checkpoints (``persistent=False``): the table is data, re-read from
    item_info, and it follows ``model.to(device)``.

    Example::

        table = ItemTable({"item_tags": tags, "item_emb_d128": vectors})
        rows = table(torch.tensor([[0, 3, 7]]))   # {"item_tags": (1, 3, 5), "item_emb_d128": (1, 3, 128)}
    """

    def __init__(self, columns: Mapping[str, np.ndarray]):
        super().__init__()
        num_rows = {name: len(values) for name, values in columns.items()}
        if len(set(num_rows.values())) > 1:
            raise ValueError(f"item table columns have different row counts: {num_rows}")
        self.names = tuple(columns)
        self.num_rows = next(iter(num_rows.values())) if num_rows else 0
        for name, values in columns.items():
            tensor = torch.as_tensor(np.ascontiguousarray(values))
            if tensor.dtype in (torch.int32, torch.int16, torch.uint8, torch.int8):
                tensor = tensor.long()
            self.register_buffer(name, tensor, persistent=False)

    def column(self, name: str) -> torch.Tensor:
        """The whole column ``name``: ``(num_rows, ...)``."""
        return getattr(self, name)

    def forward(self, item_ids: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
        """Gather rows: ``item_ids (...) int64 -> {name: (..., *feature_shape)}``."""
        names = self.names if names is None else names
        return {name: self.column(name)[item_ids] for name in names}
