"""The trainer's speed switches: precision, torch.compile, TF32 matmuls, fused optimizers.

Each switch is a model-config key read by :class:`~fuxictr_mmctr.training.trainer.TrainerConfig`
(docs/training.md has their measured effects):

* ``precision: fp32 | bf16 | fp16``: the training forward runs under ``torch.autocast`` with
  that dtype; the loss is computed on the float32 logit, weights and optimizer state stay
  float32, and fp16 adds a gradient scaler (:func:`grad_scaler`). Evaluation and prediction run
  in float32, so that scores keep float32's resolution (bf16 would tie them).
* ``compile: true``: the training forward (and the evaluation forward) go through
  ``torch.compile`` (:class:`CompiledForward`); the batch dimension and the history width are
  marked dynamic, so the last short batch, evaluation batches and trimmed histories reuse the
  graph instead of compiling one per shape. Where ``torch.compile`` cannot run (no C++
  compiler for the CPU backend, no Triton or a GPU older than compute capability 7.0, a Python
  that TorchDynamo does not support) the run stops before training with one ``error:`` line,
  and so does a compiler failure on the first batch: ``compile: False`` trains uncompiled.
* ``tf32: true`` (default): in training steps, float32 matmuls and convolutions on CUDA use
  TF32 tensor cores (:func:`tf32`); evaluation and prediction never do.
* ``fused_optimizer: true`` (default): on CUDA, optimizers that have a fused kernel (Adam,
  AdamW, SGD, ...) use it (one kernel for the whole update instead of one per tensor group).
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shutil
import sys

import torch

from fuxictr_mmctr.errors import UserError, first_line

#: ``precision`` values and the autocast dtype each means (``None``: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The ``torch.compile`` backend (tests swap in a counting backend).
COMPILE_BACKEND = "inductor"


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype of ``precision`` on ``device`` (``None`` for fp32); a precision the
    device cannot run is a :class:`UserError`."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type not in ("cuda", "cpu"):
        raise UserError(f"precision {precision} is not supported on {device.type}; use fp32")
    if device.type == "cuda" and dtype is torch.bfloat16 and not _native_bf16():
        raise UserError(f"precision bf16 needs a GPU with bfloat16 support (compute capability "
                        f">= 8.0); {torch.cuda.get_device_name(device)} has none: use fp16")
    return dtype


def _native_bf16() -> bool:
    """Whether the current GPU computes in bfloat16 natively (torch < 2.4 has no
    ``including_emulation`` argument and reports native support only)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def autocast(device: torch.device, dtype):
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op context for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has float32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for float32 matmuls and cuDNN convolutions on CUDA while the block runs, the
    previous settings restored after it (the flags are process-wide; they do nothing on the
    CPU). The trainer turns it on for its training steps only: evaluation and prediction run
    with it off, in true float32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(on)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def optimizer_options(optimizer_class: type, device: torch.device, fused: bool) -> dict:
    """``{"fused": True}`` when asked for, on CUDA, for an optimizer that has a fused kernel."""
    if not fused or device.type != "cuda":
        return {}
    if "fused" not in inspect.signature(optimizer_class).parameters:
        return {}
    return {"fused": True}


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here (``None`` when it can)."""
    if not torch._dynamo.is_dynamo_supported():
        return (f"TorchDynamo does not support Python {sys.version.split()[0]} with torch "
                f"{torch.__version__} on {sys.platform}")
    if COMPILE_BACKEND != "inductor":
        return None
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "the inductor backend needs Triton on CUDA (pip install triton)"
        if torch.cuda.get_device_capability(device) < (7, 0):
            return (f"Triton needs compute capability >= 7.0, "
                    f"{torch.cuda.get_device_name(device)} has "
                    f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")
        return None
    if device.type == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            return "the inductor backend needs a C++ compiler on the CPU (g++ or clang++)"
        return None
    return f"torch.compile is not set up for {device.type} here"


def mark_dynamic(batch: dict) -> dict:
    """Mark every dimension of every batch tensor dynamic (a hint, not a constraint): one graph
    serves every batch size and history width."""
    for tensor in batch.values():
        if isinstance(tensor, torch.Tensor):
            for dim in range(tensor.dim()):
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
    return batch


def compile_requested(on: bool, device: torch.device) -> bool:
    """Whether to compile: ``on``; asked for but impossible here -> :class:`UserError` naming
    why (a run never trains uncompiled when compiling was asked for)."""
    if not on:
        return False
    reason = compile_unavailable(device)
    if reason is not None:
        raise UserError(f"compile: True cannot run here ({reason}); set compile: False to train "
                        f"uncompiled")
    return True


class CompiledForward:
    """``module(batch)`` through ``torch.compile`` with dynamic batch shapes.

    Args:
        module: the model (or its ``DistributedDataParallel`` wrapper).

    ``__call__(batch) -> module's output``. The module itself stays uncompiled (its state dict
    and checkpoints keep their keys). A failure of the compiler stack (not of the model) is a
    :class:`UserError` naming the compiler's reason: the run stops instead of going on
    uncompiled.
    """

    def __init__(self, module):
        self.module = module
        self.compiled = torch.compile(module, backend=COMPILE_BACKEND, dynamic=None)

    def __call__(self, batch: dict):
        try:
            return self.compiled(mark_dynamic(batch))
        except compile_errors() as error:
            raise UserError(f"compile: torch.compile failed on {model_name(self.module)} "
                            f"({compiler_reason(error)}); set compile: False to train "
                            f"uncompiled") from None


def compile_errors() -> tuple:
    """Errors of the compiler stack (not of the model)."""
    errors = [torch._dynamo.exc.BackendCompilerFailed]
    try:
        from torch._inductor.exc import InductorError
    except ImportError:
        return tuple(errors)
    return (*errors, InductorError)


def model_name(module) -> str:
    """The model's class name, through a ``DistributedDataParallel`` wrapper."""
    return type(getattr(module, "module", module)).__name__


def compiler_reason(error: BaseException) -> str:
    """One line: the compiler error's first line, and its cause's when that says more (dynamo
    wraps a backend's exception as ``backend='...' raised:`` with the reason below)."""
    lines = [first_line(error)]
    cause = getattr(error, "inner_exception", None) or error.__cause__
    if cause is not None and first_line(cause) not in lines[0]:
        lines.append(f"{type(cause).__name__}: {first_line(cause)}")
    return " ".join(lines)


__all__ = ["COMPILE_BACKEND", "CompiledForward", "PRECISIONS", "autocast", "autocast_dtype",
           "compile_errors", "compile_requested", "compile_unavailable", "compiler_reason",
           "grad_scaler", "mark_dynamic", "model_name",
           "optimizer_options", "tf32"]
