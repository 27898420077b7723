"""The best-weights file ``<model_root>/<dataset_id>/<model_id>.model``: a plain ``state_dict``
(what FuxiCTR's ``BaseModel.load_weights`` reads), written atomically with the record of the
configuration that wrote it (:func:`fuxictr_mmctr.training.resume.write_weights_record`).
"""
from __future__ import annotations

import torch
from torch import nn

from fuxictr_mmctr.errors import UserError, first_line
from fuxictr_mmctr.training import checkpoint as ckpt
from fuxictr_mmctr.training import distributed
from fuxictr_mmctr.training.resume import write_weights_record


def save(model: nn.Module, path: str, signature: dict) -> None:
    """Write ``model``'s weights and their configuration record (rank 0 only)."""
    if distributed.is_main():
        ckpt.save_atomic(model.state_dict(), path)
        write_weights_record(path, signature)


def load(model: nn.Module, path: str, device: torch.device) -> None:
    """Load a weights file into ``model`` on ``device``; missing or mismatched -> UserError."""
    model.to(device)
    state_dict = ckpt.load_file(path, "model checkpoint")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        name = getattr(model, "model_id", type(model).__name__)
        raise UserError(f"{path}: weights do not match model {name} "
                        f"({first_line(error)})") from None
