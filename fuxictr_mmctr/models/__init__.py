"""Models, one per file, each registered by name in :mod:`.registry`.

``getattr(fuxictr_mmctr.models, "DIN")`` works for every registered model, as FuxiCTR runners
expect (``getattr(models, params["model"])``): a name this module does not define is looked up
in the registry, which imports every model file of the package on first use.
"""
from fuxictr_mmctr.models.registry import get_model_class, register_model, registered_models
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    from fuxictr_mmctr.errors import UserError

    try:
        return get_model_class(name)
    except UserError:
        raise AttributeError(f"module {__name__!r} has no model {name!r}") from None


__all__ = ["Transformer_DCN", "get_model_class", "register_model", "registered_models"]
