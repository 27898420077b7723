"""The one model registry: model name (as written in ``model_config.yaml``) -> model class.

A model module registers its class with :func:`register_model`; every module of the
``fuxictr_mmctr.models`` package is imported on the first lookup, so a new model (a baseline)
only needs its own file with the decorator, and configs can name it at once::

    @register_model
    class DIN(MultimodalRankModel): ...

    get_model_class("DIN")      # -> DIN
"""
from __future__ import annotations

import importlib
import pkgutil

from fuxictr_mmctr.errors import UserError

_MODELS: dict[str, type] = {}
_discovered = False


def register_model(model_class: type | None = None, *, name: str | None = None):
    """Class decorator: register ``model_class`` under ``name`` (default: its class name).

    Usable bare (``@register_model``) or with a name (``@register_model(name="DCN_v2")``).
    Registering a different class under a taken name is a programming error (``ValueError``).
    """
    def register(cls: type) -> type:
        key = name or cls.__name__
        known = _MODELS.get(key)
        if known is not None and known is not cls:
            raise ValueError(f"model name {key!r} is already registered to "
                             f"{known.__module__}.{known.__qualname__}")
        _MODELS[key] = cls
        return cls

    return register if model_class is None else register(model_class)


def _discover() -> None:
    """Import every module of this package once, so their decorators run."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry" and not module.name.startswith("_"):
            importlib.import_module(f"{__package__}.{module.name}")
    _discovered = True


def registered_models() -> list[str]:
    """Names of every registered model, sorted."""
    _discover()
    return sorted(_MODELS)


def get_model_class(name: str) -> type:
    """The class registered as ``name``; :class:`UserError` listing the known names otherwise."""
    _discover()
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}; registered models: "
                        f"{', '.join(sorted(_MODELS))}") from None


__all__ = ["get_model_class", "register_model", "registered_models"]
