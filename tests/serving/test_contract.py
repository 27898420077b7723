"""Every registered model exports to pt2 and ONNX and passes the parity check.

Each model is built from its ``<Model>_MicroLens_tiny`` expid on the tiny data and left as
initialised (the parity check does not need a trained model: it compares the exported graph
with the same weights in eager mode). ``write_artifact`` runs the whole check before writing:
valid rows, a batch of 1, empty and full histories, histories of one item, the valid AUC.
The artifact is then loaded again and scored at batch sizes and history widths the check did
not use.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.models.registry import registered_models
from fuxictr_mmctr.pipeline.experiment import build_model, load_params, prepare
from fuxictr_mmctr.serving.artifact import Artifact
from fuxictr_mmctr.serving.export import write_artifact
from fuxictr_mmctr.serving.parity import TOLERANCES

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
INPUTS = [contract.ITEM_ID, contract.ITEM_SEQ, contract.LIKES_LEVEL, contract.VIEWS_LEVEL]
PROBES = {"a batch of 1", "an empty history alone", "the most recent item only"}


def tiny_model(name, tiny_dataset, tmp_path_factory, **changes):
    """``(model, feature_map, catalogue, params)`` of ``<name>_MicroLens_tiny``, initialised."""
    params = load_params(CONFIG_DIR, f"{name}_MicroLens_tiny")
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        params[key] = os.path.join(tiny_dataset, os.path.basename(params[key]))
    params["data_root"] = str(tmp_path_factory.mktemp("feature_maps"))
    params["model_root"] = str(tmp_path_factory.mktemp("checkpoints"))
    params["verbose"] = 0
    params.update(changes)
    feature_map, catalogue = prepare(params)
    return build_model(params, feature_map, catalogue), feature_map, catalogue, params


@pytest.fixture(scope="module", params=registered_models())
def built(request, tiny_dataset, tmp_path_factory):
    return tiny_model(request.param, tiny_dataset, tmp_path_factory)


def rows_of(valid_path, count, width=None):
    """The first ``count`` valid rows as the graph's inputs (the most recent ``width`` items)."""
    import pyarrow.parquet as pq

    table = pq.read_table(valid_path).slice(0, count)
    columns = {name: np.asarray(table.column(name).to_pylist(), dtype=np.int64)
               for name in INPUTS}
    if width is not None:
        columns[contract.ITEM_SEQ] = columns[contract.ITEM_SEQ][:, -width:]
    return columns


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_every_model_exports_and_passes_parity(built, fmt, tmp_path):
    model, feature_map, catalogue, params = built
    out = tmp_path / "artifact"
    result = write_artifact(model, feature_map, catalogue, params["valid_data"], str(out), fmt,
                            source={"expid": f"{type(model).__name__}_MicroLens_tiny"})
    parity = result["parity"]
    assert parity["valid_rows"]["rows"] == 1000            # the whole tiny valid split
    assert PROBES <= set(parity["probes"])
    assert any(name.startswith("empty histories") for name in parity["probes"])
    assert any(name.startswith("full histories") for name in parity["probes"])
    assert abs(parity["auc"]["eager"] - parity["auc"]["exported"]) <= 5e-5
    signature = json.loads((out / "signature.json").read_text())
    assert [spec["name"] for spec in signature["inputs"]] == INPUTS
    assert signature["dims"]["history"] == {"min": 1, "max": model.max_len}
    # The history stays dynamic inside the graph for every model whose layers allow it.
    assert signature["history"]["padded_in_graph"] == (not model.exports_dynamic_history)
    assert signature["ignored_fields"] == [contract.USER_ID]
    assert signature["items"]["vocab_size"] == catalogue.num_rows
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]

    # Loaded again: sizes the check did not use, against the eager model at full width.
    artifact = Artifact.load(out)
    tolerance = TOLERANCES["fp32"]
    model.eval()
    # (300 rows at max_len: histories of every length, scored in length groups)
    for count, width in ((3, 1), (1, model.max_len), (7, 5), (300, model.max_len)):
        columns = rows_of(params["valid_data"], count, width)
        full = dict(columns)
        full[contract.ITEM_SEQ] = np.pad(columns[contract.ITEM_SEQ],
                                         ((0, 0), (model.max_len - width, 0)))
        with torch.no_grad():
            eager = model({name: torch.from_numpy(values) for name, values in full.items()})
        np.testing.assert_allclose(artifact.logits(columns),
                                   eager["logit"].reshape(-1).numpy(),
                                   rtol=tolerance.rtol, atol=tolerance.atol)


def test_a_padding_dependent_model_gets_its_history_padded_in_the_graph(
        tiny_dataset, tmp_path_factory, tmp_path):
    """The legacy mask makes Transformer_DCN's output depend on the padding width: the graph
    pads every history to max_len, so the artifact scores as the model trained at that width."""
    model, feature_map, catalogue, params = tiny_model(
        "Transformer_DCN", tiny_dataset, tmp_path_factory, legacy_mask=True)
    result = write_artifact(model, feature_map, catalogue, params["valid_data"],
                            str(tmp_path / "artifact"), "pt2")
    assert result["padded_in_graph"]
    signature = json.loads((tmp_path / "artifact" / "signature.json").read_text())
    assert signature["history"]["padded_in_graph"]
    assert signature["dims"]["history"] == {"min": 1, "max": model.max_len}


def test_an_embedded_user_id_is_an_input(tiny_dataset, tmp_path_factory, tmp_path):
    """A dataset that embeds user_id (a categorical feature) makes it a graph input."""
    params = load_params(CONFIG_DIR, "DIN_MicroLens_tiny")
    columns = [dict(column) for column in params["feature_cols"]]
    for column in columns:
        if column["name"] == contract.USER_ID:
            column["type"] = "categorical"
    model, feature_map, catalogue, params = tiny_model(
        "DIN", tiny_dataset, tmp_path_factory, feature_cols=columns,
        dataset_id="MicroLens_synth_tiny_user")
    result = write_artifact(model, feature_map, catalogue, params["valid_data"],
                            str(tmp_path / "artifact"), "pt2")
    signature = Artifact.load(result["out"]).signature
    assert signature.input_names == INPUTS[:2] + [contract.USER_ID] + INPUTS[2:]
    assert signature.input(contract.USER_ID).vocab_size == catalogue.schema.user_vocab
    assert signature.ignored_fields == []
