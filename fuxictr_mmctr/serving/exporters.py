"""A :class:`~fuxictr_mmctr.serving.graph.ServingGraph` to files: pt2, ONNX or AOTInductor.

=======  =====================================  ==========================================
format   files                                  loaded with
=======  =====================================  ==========================================
pt2      ``model.pt2``                          ``torch.export.load(path).module()``
onnx     ``model.onnx`` + ``model.onnx.data``   ``onnxruntime.InferenceSession(path)``
aoti     ``model.pt2`` (AOTInductor package)    ``torch._inductor.aoti_load_package(path)``
=======  =====================================  ==========================================

Every format holds the item side table (the frozen item buffers become constants of the
program, or ONNX initialisers): a caller sends ids only. The ONNX weights live in the
external-data file beside the graph (no 2 GB protobuf limit); both files belong together.
"""
from __future__ import annotations

import os
import shutil
import warnings

import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import optional
from fuxictr_mmctr.serving.graph import dynamic_shapes
from fuxictr_mmctr.serving.signature import OUTPUTS

FORMATS = ("pt2", "onnx", "aoti")
PT2_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"
#: The ONNX opset written (onnxruntime >= 1.17 runs it).
ONNX_OPSET = 18


def export_program(graph, example, input_names, max_len: int):
    """``torch.export`` of ``graph`` with dynamic ``batch`` and ``history`` dimensions.

    A guard that ``torch.export``'s symbolic reasoning cannot prove for every size in range
    (``nn.MultiheadAttention`` with several heads and a key padding mask yields
    ``min(h + 1, 2h + 2) == h + 1``, true for every ``h >= 0``) becomes an assertion checked at
    run time instead of a refusal (``prefer_deferred_runtime_asserts_over_guards``): a size
    that broke one would fail loudly when the graph is called, never silently. The parity check
    calls the graph at widths 1, ``max_len`` and the valid rows' own before anything is
    written.

    Raises whatever ``torch.export`` raises (the caller decides whether to retry with the
    history padded inside the graph).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(graph, example,
                                   dynamic_shapes=dynamic_shapes(input_names, max_len),
                                   strict=False, prefer_deferred_runtime_asserts_over_guards=True)


def save_pt2(program, folder) -> list[str]:
    """``folder/model.pt2`` (``torch.export.save``); returns the file names written."""
    torch.export.save(program, os.path.join(folder, PT2_FILE))
    return [PT2_FILE]


def save_onnx(program, example, input_names, max_len: int, folder) -> list[str]:
    """``folder/model.onnx`` (+ ``model.onnx.data``): the ``torch.export`` program of
    :func:`export_program` through the dynamo ONNX exporter, with the inputs and outputs named
    as in the signature; the dynamic shapes given again name the dimensions ``batch`` and
    ``history`` (without them the ONNX file would call them by their symbols, ``s33``...);
    returns the file names written."""
    optional.require("onnx", "--format onnx")
    optional.require("onnxscript", "--format onnx")
    path = os.path.join(folder, ONNX_FILE)
    with warnings.catch_warnings(), _quiet_stdout():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, example, dynamo=True, opset_version=ONNX_OPSET,
                                         dynamic_shapes=dynamic_shapes(input_names, max_len),
                                         input_names=list(input_names),
                                         output_names=[output["name"] for output in OUTPUTS],
                                         report=False, verify=False)
        onnx_program.save(path, external_data=True)
    files = [ONNX_FILE]
    if os.path.exists(os.path.join(folder, ONNX_DATA_FILE)):
        files.append(ONNX_DATA_FILE)
    return files


def compiler_missing() -> str | None:
    """Why AOTInductor cannot compile here (no C++ compiler), or ``None``."""
    for compiler in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if compiler and shutil.which(compiler):
            return None
    return "no C++ compiler (g++, c++ or clang++) on PATH"


def save_aoti(program, folder) -> list[str]:
    """``folder/model.pt2`` as an AOTInductor package (compiled C++ for this CPU)."""
    reason = compiler_missing()
    if reason is not None:
        raise UserError(f"--format aoti needs a C++ compiler to build the package: {reason}; "
                        f"use --format pt2 or onnx")
    from torch._inductor import aoti_compile_and_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aoti_compile_and_package(program, package_path=os.path.join(folder, PT2_FILE))
    return [PT2_FILE]


class _quiet_stdout:
    """Silence the ONNX exporter's progress lines on stdout (``[torch.onnx] ...``)."""

    def __enter__(self):
        import contextlib
        import io

        self._redirect = contextlib.redirect_stdout(io.StringIO())
        return self._redirect.__enter__()

    def __exit__(self, *exc):
        return self._redirect.__exit__(*exc)
