"""Which device a run uses: what was asked for, or a clear error (never a silent CPU fallback)."""
from __future__ import annotations

import torch

from fuxictr_mmctr.errors import UserError


def resolve_device(gpu: int = -1) -> torch.device:
    """``gpu < 0`` -> the CPU; ``gpu = N`` -> ``cuda:N``, or :class:`UserError` when this machine
    has no CUDA device ``N``.

    FuxiCTR's ``get_device`` quietly returns the CPU when CUDA is missing, which turns a
    requested GPU run into a CPU run that looks like it worked.

    A GPU also becomes this process's current CUDA device, so that work issued without an
    explicit device (the loader's pinned-copy events, streams, cuBLAS handles) lands on it
    rather than on GPU 0.
    """
    gpu = int(gpu)
    if gpu < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu} asked for a GPU but this machine has no CUDA device "
                        f"(torch {torch.__version__}); use --gpu -1 for the CPU")
    count = torch.cuda.device_count()
    if gpu >= count:
        raise UserError(f"--gpu {gpu} asked for GPU {gpu} but this machine has {count} "
                        f"(indices 0..{count - 1})")
    torch.cuda.set_device(gpu)
    return torch.device(f"cuda:{gpu}")
