"""``fuxictr-mmctr export``: the artifact folder, its signature, and every way it refuses."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import exporters, parity
from fuxictr_mmctr.serving.artifact import Artifact
from fuxictr_mmctr.serving.export import export_artifact
from tests.builders import inside
from tests.serving.conftest import TINY, run_cli


def digest(folder) -> dict:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


def test_the_command_writes_a_self_contained_artifact(pt2_export, serving_workdir):
    out, result = pt2_export
    assert sorted(os.listdir(out)) == ["model.pt2", "signature.json"]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out} (pt2, fp32, history as given): parity passed")
    assert "valid AUC" in line
    # Nothing left behind beside it.
    assert [name for name in os.listdir(out.parent) if name.startswith(".tmp-")] == []

    signature = json.loads((out / "signature.json").read_text())
    assert signature["format"] == "pt2" and signature["precision"] == "fp32"
    assert [spec["name"] for spec in signature["inputs"]] == [
        "item_id", "item_seq", "likes_level", "views_level"]
    assert signature["inputs"][1]["shape"] == ["batch", "history"]
    assert signature["dims"] == {"batch": {"min": 1, "max": None},
                                 "history": {"min": 1, "max": 20}}
    assert [output["name"] for output in signature["outputs"]] == ["probability", "logit"]
    assert signature["history"]["max_len"] == 20
    assert not signature["history"]["padded_in_graph"]     # the history stays dynamic
    assert signature["items"] == {"vocab_size": 301, "id_map": None, "encoded_in_graph": True}
    assert signature["data_schema"]["max_seq_len"] == 20

    source = signature["source"]
    checkpoint = serving_workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.model"
    assert source["expid"] == TINY and source["model"] == "Transformer_DCN"
    assert source["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    from fuxictr_mmctr.pipeline.experiment import load_params
    from fuxictr_mmctr.pipeline.run_record import config_hash

    with inside(serving_workdir):
        params = load_params("./config/", TINY)
        params["gpu"] = -1
        assert source["config_hash"] == config_hash(params)
    assert {"torch", "python", "fuxictr_mmctr"} <= set(signature["versions"])

    report = signature["parity"]
    assert report["valid_rows"]["rows"] == 1000
    assert report["valid_rows"]["max_abs_logit_diff"] < 1e-4
    assert abs(report["auc"]["eager"] - report["auc"]["exported"]) <= 5e-5
    assert report["auc"]["eager"] > 0.55                     # one epoch learned something


def test_the_onnx_artifact_holds_graph_and_weights(onnx_artifact):
    assert {"model.onnx", "signature.json"} <= set(os.listdir(onnx_artifact))
    signature = Artifact.load(onnx_artifact).signature
    assert signature.format == "onnx" and signature.files[0] == "model.onnx"
    import onnx

    graph = onnx.load(str(onnx_artifact / "model.onnx"), load_external_data=False).graph
    assert [value.name for value in graph.input] == signature.input_names
    assert [value.name for value in graph.output] == ["probability", "logit"]
    dims = [[dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
            for value in graph.input]
    assert dims == [["batch"], ["batch", "history"], ["batch"], ["batch"]]


def test_bf16_passes_its_looser_parity(serving_workdir, tmp_path):
    with inside(serving_workdir):
        result = export_artifact("./config/", TINY, str(tmp_path / "bf16"), fmt="pt2",
                                 precision="bf16")
    report = result["parity"]
    assert report["rtol"] == parity.TOLERANCES["bf16"].rtol
    assert abs(report["auc"]["eager"] - report["auc"]["exported"]) <= 5e-3
    assert Artifact.load(tmp_path / "bf16").signature.precision == "bf16"


@pytest.mark.parametrize("options, message", [
    ({"fmt": "torchscript"}, "--format 'torchscript': choose one of pt2, onnx, aoti"),
    ({"precision": "fp16"}, "--precision 'fp16': choose one of fp32, bf16"),
    ({"fmt": "onnx", "precision": "bf16"}, "--precision bf16 is available for pt2 and aoti only"),
    ({"checkpoint": "nowhere.model"}, "--checkpoint nowhere.model: not found"),
])
def test_bad_options_are_one_line(serving_workdir, tmp_path, options, message):
    with inside(serving_workdir), pytest.raises(UserError, match="^" + re.escape(message)):
        export_artifact("./config/", TINY, str(tmp_path / "out"), **options)
    assert not (tmp_path / "out").exists()


def test_an_untrained_expid_says_how_to_train_it(serving_workdir, tmp_path):
    result = run_cli(["export", "--expid", "DIN_MicroLens_tiny", "--out", str(tmp_path / "a")],
                     cwd=serving_workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: no trained model for expid DIN_MicroLens_tiny at ")
    assert "python run_expid.py --expid DIN_MicroLens_tiny" in result.stderr
    assert not (tmp_path / "a").exists()


def test_out_must_be_free_for_an_artifact(serving_workdir, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with inside(serving_workdir):
        with pytest.raises(UserError, match="is a file; give a folder"):
            export_artifact("./config/", TINY, str(a_file))
        with pytest.raises(UserError, match=r"holds other files \(notes.txt, ...\)"):
            export_artifact("./config/", TINY, str(other))
    assert (other / "notes.txt").read_text() == "mine"


def test_the_aoti_format_says_when_there_is_no_compiler(serving_workdir, tmp_path, monkeypatch):
    monkeypatch.setattr(exporters.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with inside(serving_workdir), pytest.raises(UserError, match="^--format aoti needs a C\\+\\+ "
                                                              "compiler"):
        export_artifact("./config/", TINY, str(tmp_path / "aoti"), fmt="aoti")


def test_a_failed_parity_check_writes_nothing(serving_workdir, pt2_artifact, tmp_path,
                                             monkeypatch):
    out = tmp_path / "artifact"
    shutil.copytree(pt2_artifact, out)                       # an earlier artifact stays as it was
    before = digest(out)
    real_logits = Artifact.logits
    monkeypatch.setattr(Artifact, "logits",
                        lambda self, columns: real_logits(self, columns) + np.float32(0.01))
    with inside(serving_workdir), pytest.raises(UserError) as caught:
        export_artifact("./config/", TINY, str(out))
    message = str(caught.value)
    assert message.startswith("parity check failed on a batch of 1, row 0: |exported - eager| "
                              "logit = 0.01")
    assert "exceeds atol 1e-05 + rtol 0.001 x |eager|" in message
    assert message.endswith(f"nothing was written to {out}")
    assert "\n" not in message
    assert digest(out) == before
    assert [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")] == []


def test_an_auc_mismatch_fails_the_check(serving_workdir, tmp_path, monkeypatch):
    monkeypatch.setitem(parity.TOLERANCES, "fp32",
                        parity.Tolerance(rtol=1e9, atol=1e9, auc=-1.0))
    with inside(serving_workdir), pytest.raises(UserError,
                                                match=r"^parity check failed: valid AUC on 1000 "
                                                      r"rows is 0\.\d{6} eager and 0\.\d{6} "
                                                      r"exported"):
        export_artifact("./config/", TINY, str(tmp_path / "artifact"))
    assert not (tmp_path / "artifact").exists()


@pytest.mark.slow
def test_aoti_packages_the_graph(serving_workdir, tmp_path):
    if exporters.compiler_missing():
        pytest.skip("no C++ compiler")
    with inside(serving_workdir):
        result = export_artifact("./config/", TINY, str(tmp_path / "aoti"), fmt="aoti")
    assert result["parity"]["valid_rows"]["max_abs_logit_diff"] < 1e-4
    assert Artifact.load(tmp_path / "aoti").signature.format == "aoti"


def test_a_checkpoint_path_is_exported(serving_workdir, tmp_path):
    best = serving_workdir / "checkpoints" / "MicroLens_synth_tiny" / f"{TINY}.model"
    copy = shutil.copy(best, tmp_path / "weights.model")
    with inside(serving_workdir):
        export_artifact("./config/", TINY, str(tmp_path / "artifact"), checkpoint=str(copy))
    source = Artifact.load(tmp_path / "artifact").signature.source
    assert source["checkpoint"] == str(copy)


def test_onnx_without_the_serve_extra_names_it(serving_workdir, tmp_path, monkeypatch):
    from fuxictr_mmctr.serving import optional

    real = optional.importlib.import_module

    def no_onnx(name, *args):
        if name.split(".")[0] == "onnx":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(optional.importlib, "import_module", no_onnx)
    with inside(serving_workdir), pytest.raises(UserError, match=re.escape(
            '--format onnx needs the Python package onnx, which is not installed; install the '
            'serve extra: pip install -e ".[serve]"')):
        export_artifact("./config/", TINY, str(tmp_path / "artifact"), fmt="onnx")
