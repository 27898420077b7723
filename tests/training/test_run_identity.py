"""A model is only a model: building one allocates no optimizer; TF32 is on for training steps
only; and a weights file names the configuration that wrote it, so a prediction never uses
weights another configuration trained."""
from __future__ import annotations

import gc
import logging

import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline.experiment import run_experiment
from fuxictr_mmctr.pipeline.prediction import predict_scores
from fuxictr_mmctr.training.resume import check_weights_record, write_weights_record
from tests.builders import inside, working_folder
from tests.models.builders import make_batch, tiny_transformer_dcn

TINY = "Transformer_DCN_MicroLens_tiny"


def optimizers_over(model) -> list:
    parameters = {id(p) for p in model.parameters()}
    return [obj for obj in gc.get_objects() if issubclass(type(obj), torch.optim.Optimizer)
            and any(id(p) in parameters for group in obj.param_groups for p in group["params"])]


def test_building_a_model_allocates_no_optimizer_and_sets_no_flag(tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    model = tiny_transformer_dcn(tmp_path)
    assert optimizers_over(model) == []
    assert torch.backends.cuda.matmul.allow_tf32 is False
    model.trainer.predict([make_batch()])  # prediction needs no optimizer either
    assert optimizers_over(model) == []
    model.trainer.train_step(make_batch())
    assert len(optimizers_over(model)) == 1


def test_tf32_is_on_in_training_steps_and_off_in_evaluation(tmp_path):
    model = tiny_transformer_dcn(tmp_path)
    seen = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.backends.cuda.matmul.allow_tf32)))
    torch.backends.cuda.matmul.allow_tf32 = False
    model.trainer.train_step(make_batch())
    torch.backends.cuda.matmul.allow_tf32 = True  # a caller's setting does not leak into eval
    model.trainer.predict([make_batch()])
    assert seen == [(True, True), (False, False)]
    assert torch.backends.cuda.matmul.allow_tf32 is True  # restored after each


def test_weights_record_refuses_another_configuration(tmp_path, caplog):
    checkpoint = str(tmp_path / "M.model")
    trained = {"model": "M", "learning_rate": 0.001, "gpu": -1, "epochs": 2, "data_files": {}}
    write_weights_record(checkpoint, trained)
    check_weights_record(checkpoint, {**trained, "gpu": 0, "epochs": 4})  # how to run: fine
    with pytest.raises(UserError, match=r"trained with learning_rate=0\.001, this "
                                        r"configuration has learning_rate=100"):
        check_weights_record(checkpoint, {**trained, "learning_rate": 100})
    caplog.set_level(logging.WARNING)
    check_weights_record(str(tmp_path / "other.model"), trained)
    assert "no record of the configuration that wrote these weights" in caplog.text


def test_prediction_refuses_weights_an_earlier_configuration_trained(tmp_path, tiny_dataset):
    workdir = working_folder(tmp_path, tiny_dataset)
    config = workdir / "config" / "model_config" / "Transformer_DCN.yaml"
    anchor = "Transformer_DCN_MicroLens_tiny: &transformer_dcn_tiny\n"
    assert anchor in config.read_text()
    with inside(workdir):
        run_experiment("./config/", TINY, gpu=-1)
        valid = "./data/MicroLens_synth_tiny/valid.parquet"
        assert len(predict_scores("./config/", TINY, -1, valid)) > 0
        text = config.read_text()
        config.write_text(text.replace(anchor, anchor + "    learning_rate: 0.5\n"))
        with pytest.raises(UserError, match="these weights were trained with learning_rate="):
            predict_scores("./config/", TINY, -1, valid)

