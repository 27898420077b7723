"""The model registry: names in configs resolve to classes; unknown names are one-line errors."""
from __future__ import annotations

import glob
import os

import pytest
import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.models import registry
from fuxictr_mmctr.models.registry import get_model_class, register_model, registered_models
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")


def model_config_expids():
    """``(file, expid, model name)`` for every expid of every model config under config/
    (``model_config.yaml`` files and ``model_config/*.yaml``)."""
    found = []
    paths = (glob.glob(os.path.join(CONFIG_DIR, "**", "model_config.yaml"), recursive=True)
             + glob.glob(os.path.join(CONFIG_DIR, "model_config", "*.yaml")))
    for path in sorted(paths):
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        base_model = (config.get("Base") or {}).get("model")
        for expid, params in config.items():
            if expid != "Base":
                found.append((os.path.relpath(path, CONFIG_DIR), expid,
                              (params or {}).get("model", base_model)))
    return found


def test_transformer_dcn_is_registered():
    assert get_model_class("Transformer_DCN") is Transformer_DCN
    assert "Transformer_DCN" in registered_models()


@pytest.mark.parametrize("config_file,expid,model", model_config_expids() or
                         [pytest.param(None, None, None, marks=pytest.mark.skip("no configs"))])
def test_every_expid_in_config_resolves_to_a_registered_class(config_file, expid, model):
    assert model, f"{config_file}: expid {expid} names no model"
    assert isinstance(get_model_class(model), type)


def test_unknown_model_is_a_one_line_user_error_listing_known_models():
    with pytest.raises(UserError) as error:
        get_model_class("Transformer_DCNN")
    message = str(error.value)
    assert "'Transformer_DCNN'" in message and "Transformer_DCN" in message and "\n" not in message


def test_register_model_by_class_name_or_alias_and_refuse_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model
    class ToyModel:
        pass

    register_model(ToyModel, name="ToyAlias")
    assert get_model_class("ToyModel") is ToyModel and get_model_class("ToyAlias") is ToyModel
    register_model(ToyModel)   # registering the same class again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_model(type("Other", (), {}), name="ToyModel")


def test_fuxictr_runners_find_every_registered_model_by_getattr():
    import fuxictr_mmctr.models as models

    for name in registered_models():
        assert getattr(models, name) is get_model_class(name)
    with pytest.raises(AttributeError):
        getattr(models, "NoSuchModel")


def test_every_registered_model_has_real_demo_and_tiny_expids():
    expids = {expid for _, expid, _ in model_config_expids()}
    for name in registered_models():
        for suffix in ("", "_demo", "_tiny"):
            assert f"{name}_MicroLens{suffix}" in expids, f"{name}_MicroLens{suffix} missing"
