"""The packages of the ``serve`` extra, imported where they are needed.

``onnx``/``onnxruntime``/``onnxscript`` (ONNX export and scoring) and ``fastapi``/``uvicorn``
(the HTTP server) are optional: the package trains and predicts without them. A command that
needs one that is missing stops with one line saying which extra to install.
"""
from __future__ import annotations

import importlib

from fuxictr_mmctr.errors import UserError

#: The install command printed when a package of the extra is missing.
INSTALL_HINT = 'pip install -e ".[serve]"'


def require(module: str, purpose: str):
    """Import ``module`` or raise a :class:`UserError` naming ``purpose`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the Python package {module.split('.')[0]}, which is not "
                        f"installed; install the serve extra: {INSTALL_HINT}") from None


def version_of(module: str) -> str | None:
    """``module.__version__`` when it is importable, else ``None``."""
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return None
