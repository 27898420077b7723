"""The training loss between evaluation points: summed on the device (no host sync per step),
read once per evaluation point, where a non-finite value stops training."""
from __future__ import annotations

import numpy as np
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import distributed


class LossMeter:
    """Device-side sum of per-batch losses since the last :meth:`read`.

    Args:
        device: where the losses live.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros((), device=self.device)
        self.batches = 0

    def add(self, loss: torch.Tensor) -> None:
        """Add one batch's scalar loss (detached; stays on the device)."""
        self.total += loss.detach()
        self.batches += 1

    def read(self, global_step: int, epoch: int, checkpoint: str) -> float:
        """Mean loss since the last read (one host sync), then reset; non-finite -> UserError
        naming the steps and the checkpoint left unchanged.

        Distributed: summed over ranks first, so a NaN on any rank stops every rank.
        """
        batches = max(self.batches, 1) * distributed.world_size()
        total = float(distributed.all_reduce_sum(self.total).item())
        first_step = global_step - self.batches + 1
        self.reset()
        if not np.isfinite(total):
            raise UserError(
                f"training loss became {total} between global steps {first_step} and "
                f"{global_step} (epoch {epoch + 1}); training stopped, best checkpoint "
                f"{checkpoint} left unchanged (lower the learning rate or check the data)")
        return total / batches
