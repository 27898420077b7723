"""``fuxictr-mmctr export``: a trained run's checkpoint as a self-contained artifact folder.

::

    fuxictr-mmctr export --expid ID [--config DIR] [--checkpoint best|PATH]
                         --format pt2|onnx|aoti [--precision fp32|bf16] --out DIR

1. The expid's config, data catalogue and model are built as ``prediction.py`` builds them,
   and the checkpoint (``best``: ``<model_root>/<dataset_id>/<expid>.model``) is loaded.
2. The model is wrapped in a :class:`~fuxictr_mmctr.serving.graph.ServingGraph`, its item
   side encoded once for every item (:class:`~fuxictr_mmctr.serving.graph.EncodedItems`), and
   traced with ``torch.export`` (batch and history dynamic); a model whose graph is not valid
   for every history length (``exports_dynamic_history`` false: DIEN's unrolled recurrences;
   or a padding-dependent mask) gets its history padded to max_len inside the graph instead.
3. The graph is written in the requested format into a temporary folder beside ``--out``,
   with ``signature.json`` (and ``item_ids.parquet`` for a catalogue with its own ids).
4. The graph is loaded back from those files and must pass the parity check
   (:mod:`fuxictr_mmctr.serving.parity`) against the eager model on real validation rows.
5. Only then is the folder renamed to ``--out``. A failure anywhere writes nothing: one
   ``error:`` line (by how much parity failed, when it did) and exit status 2.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
from datetime import datetime, timezone

import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import exporters, optional
from fuxictr_mmctr.serving.artifact import (
    Artifact,
    artifact_folder,
    check_artifact_out,
    write_id_map,
)
from fuxictr_mmctr.serving.graph import (
    ServingGraph,
    example_inputs,
    export_mode,
    graph_inputs,
)
from fuxictr_mmctr.serving.parity import ParityError, check_parity, valid_slice
from fuxictr_mmctr.serving.signature import SIGNATURE_FILE, Signature

PRECISIONS = ("fp32", "bf16")
#: Packages whose versions an artifact records.
RECORDED_VERSIONS = ("fuxictr", "numpy", "onnx", "onnxruntime", "onnxscript")


def check_options(fmt: str, precision: str) -> None:
    """The format and precision exist and go together; the packages they need are installed
    (all checked before anything is loaded or written)."""
    if fmt not in exporters.FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(exporters.FORMATS)}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if fmt == "onnx":
        if precision != "fp32":
            raise UserError("--precision bf16 is available for pt2 and aoti only (ONNX "
                            "Runtime's CPU kernels have no bfloat16 matmul); export onnx in fp32")
        for module in ("onnx", "onnxscript", "onnxruntime"):
            optional.require(module, "--format onnx")
    if fmt == "aoti":
        reason = exporters.compiler_missing()
        if reason is not None:
            raise UserError(f"--format aoti needs a C++ compiler to build the package and this "
                            f"machine has {reason}; use --format pt2 or onnx")


def export_artifact(config_dir: str, expid: str, out: str, fmt: str = "pt2",
                    precision: str = "fp32", checkpoint: str = "best") -> dict:
    """Export ``expid``'s checkpoint to the artifact folder ``out`` (module docstring).

    Returns ``{"out", "format", "precision", "padded_in_graph", "parity"}``.
    """
    from fuxictr_mmctr.pipeline.experiment import build_model, load_params, prepare
    from fuxictr_mmctr.training.resume import check_weights_record

    check_options(fmt, precision)
    out = check_artifact_out(out)
    params = load_params(config_dir, expid, -1)
    params["gpu"] = -1
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    checkpoint_path = _checkpoint_path(model, expid, checkpoint)
    check_weights_record(checkpoint_path, model.run_signature)
    model.load_weights(checkpoint_path)
    return write_artifact(model, feature_map, catalogue, params.get("valid_data"), out, fmt,
                          precision, source=_source(params, expid, model, checkpoint_path))


def write_artifact(model, feature_map, catalogue, valid_path, out: str, fmt: str = "pt2",
                   precision: str = "fp32", source: dict | None = None) -> dict:
    """Steps 2-5 of the module docstring for a model in memory (its weights loaded).

    Args:
        model: the trained :class:`~fuxictr_mmctr.models.base.MultimodalRankModel`.
        feature_map, catalogue: the run's feature map and item catalogue.
        valid_path: the valid split the parity check reads.
        out: the artifact folder (checked by :func:`check_artifact_out`).
        fmt, precision: see :func:`check_options`.
        source: provenance recorded in signature.json (expid, config hash, checkpoint, ...).
    """
    check_options(fmt, precision)
    out = check_artifact_out(out)
    if not valid_path or not os.path.isfile(valid_path):
        raise UserError(f"the parity check needs the valid split, and {valid_path} is not a "
                        f"file")
    split = catalogue.load_split(valid_path)
    model.eval()
    max_len = int(model.max_len or catalogue.schema.max_seq_len)
    specs = graph_inputs(feature_map, catalogue.num_rows)
    names = [spec.name for spec in specs]
    trace_columns = valid_slice(split, names, max_len, rows=64)
    autocast = torch.bfloat16 if precision == "bf16" else None
    with artifact_folder(out) as tmp:
        with export_mode(model):
            graph, program = _trace(model, names, max_len, trace_columns, autocast)
            files = _save(fmt, graph, program, trace_columns, names, max_len, tmp)
        signature = Signature(
            format=fmt, precision=precision, files=files, inputs=specs, max_len=max_len,
            padded_in_graph=graph.pad_history, item_vocab=catalogue.num_rows,
            id_map=write_id_map(catalogue.remap, tmp),
            items_encoded=hasattr(getattr(model, "inputs", None), "item_encoder"),
            ignored_fields=[column.name for column in catalogue.schema.split_columns("test")
                            if column.name not in names],
            data_schema=dataclasses.asdict(catalogue.schema), source=dict(source or {}),
            versions=_versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_signature(signature, tmp)
        artifact = Artifact.load(tmp)   # the files as written: what a caller will load
        try:
            report = check_parity(model, split, names, max_len, artifact.logits, precision)
        except ParityError as error:
            raise ParityError(f"{error}; nothing was written to {out}") from None
        _write_signature(signature.replace(parity=report), tmp)
    logging.info("Exported %s (%s, %s) to %s", type(model).__name__, fmt, precision, out)
    return {"out": out, "format": fmt, "precision": precision,
            "padded_in_graph": graph.pad_history, "parity": report}


def _checkpoint_path(model, expid: str, checkpoint: str) -> str:
    """``best`` -> the run's best checkpoint; otherwise the path given (must exist)."""
    if checkpoint in (None, "", "best"):
        path = model.checkpoint
        if not os.path.exists(path):
            raise UserError(f"no trained model for expid {expid} at {path}; train it first: "
                            f"python run_expid.py --expid {expid}")
        return path
    if not os.path.isfile(checkpoint):
        what = "is a folder" if os.path.isdir(checkpoint) else "not found"
        raise UserError(f"--checkpoint {checkpoint}: {what}; give a .model file or 'best'")
    return checkpoint


def _trace(model, names, max_len: int, columns: dict, autocast):
    """``(graph, program)``: the history as given when the model allows any length, else
    padded to max_len in the graph (see :mod:`fuxictr_mmctr.serving.graph`)."""
    from fuxictr_mmctr.layers.packing import history_trim_exact

    example = example_inputs(columns, names)
    as_given = history_trim_exact(model) and model.exports_dynamic_history
    attempts = [False, True] if as_given else [True]
    failure = None
    for pad in attempts:
        graph = ServingGraph(model, names, max_len, pad_history=pad, autocast_dtype=autocast)
        try:
            from fuxictr_mmctr.serving.exporters import export_program

            return graph, export_program(graph, example, names, max_len)
        except Exception as error:  # torch.export raises many types; the next attempt decides
            failure = error
            logging.info("torch.export with the history %s failed: %s",
                         "padded in the graph" if pad else "as given",
                         str(error).strip().splitlines()[0] if str(error).strip() else error)
    first = (str(failure).strip().splitlines() or [type(failure).__name__])[0][:300]
    raise UserError(f"torch.export cannot export {type(model).__name__} ({first})")


def _save(fmt: str, graph, program, columns: dict, names, max_len: int, folder: str) -> list:
    """Write the graph in ``fmt`` into ``folder``; returns the files (graph file first)."""
    if fmt == "pt2":
        return exporters.save_pt2(program, folder)
    if fmt == "aoti":
        return exporters.save_aoti(program, folder)
    try:
        return exporters.save_onnx(program, example_inputs(columns, names), names, max_len,
                                   folder)
    except UserError:
        raise
    except Exception as error:  # the ONNX exporter raises many types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise UserError(f"ONNX export of {type(graph.model).__name__} failed ({first})") from None


def _write_signature(signature: Signature, folder: str) -> None:
    with open(os.path.join(folder, SIGNATURE_FILE), "w", encoding="utf-8") as handle:
        handle.write(signature.to_json())


def _source(params: dict, expid: str, model, checkpoint_path: str) -> dict:
    """Where the graph came from: the run, its config hash and the checkpoint's digest."""
    from fuxictr_mmctr.pipeline.run_record import config_hash

    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"expid": expid, "model": type(model).__name__, "dataset_id": params["dataset_id"],
            "config_hash": config_hash(params), "checkpoint": os.path.abspath(checkpoint_path),
            "checkpoint_sha256": digest.hexdigest()}


def _versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        versions["fuxictr_mmctr"] = metadata.version("fuxictr-mmctr")
    except metadata.PackageNotFoundError:
        versions["fuxictr_mmctr"] = None
    for module in RECORDED_VERSIONS:
        version = optional.version_of(module)
        if version is not None:
            versions[module] = version
    return versions
