"""signature.json: what an exported graph takes and gives, and where it came from.

An artifact folder holds the graph and this file; a caller needs nothing else to score::

    {"format_version": 1, "format": "pt2", "precision": "fp32", "files": ["model.pt2"],
     "inputs": [{"name": "item_id",  "dtype": "int64", "shape": ["batch"], "kind": "item",
                 "vocab_size": 301},
                {"name": "item_seq", "dtype": "int64", "shape": ["batch", "history"],
                 "kind": "history", "vocab_size": 301},
                {"name": "likes_level", "dtype": "int64", "shape": ["batch"], "kind": "side",
                 "vocab_size": 11}, ...],
     "dims": {"batch": {"min": 1, "max": null}, "history": {"min": 1, "max": 20}},
     "outputs": [{"name": "probability", "dtype": "float32", "shape": ["batch"]},
                 {"name": "logit", "dtype": "float32", "shape": ["batch"]}],
     "history": {"max_len": 20, "padding_id": 0, "left_padded": true, "padded_in_graph": false},
     "items": {"vocab_size": 301, "id_map": null, "encoded_in_graph": true},
     "ignored_fields": ["user_id"],
     "data_schema": {...}, "source": {"expid", "model", "dataset_id", "config_hash",
                                      "checkpoint", "checkpoint_sha256"},
     "versions": {"fuxictr_mmctr", "torch", "python", ...}, "parity": {...}, "created": "..."}

Inputs are passed to the graph positionally, in the order listed. Every input's first dimension
is the dynamic ``batch`` (>= 1); ``item_seq``'s second is the dynamic ``history`` (1..max_len),
left-padded with the padding id 0 (most recent item last). Values are item-table rows for item
inputs (``items.id_map`` names the file mapping a catalogue's own ids to rows, when it has one)
and embedding rows for side inputs; each lies in ``[0, vocab_size)``. ``encoded_in_graph``:
the graph holds every item's encoded representation as a constant table (see
:class:`~fuxictr_mmctr.serving.graph.EncodedItems`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from fuxictr_mmctr.errors import UserError

SIGNATURE_FILE = "signature.json"
FORMAT_VERSION = 1
#: Names of the two dynamic dimensions.
BATCH, HISTORY = "batch", "history"
#: Input kinds: the target item, the history of items, a side categorical feature.
ITEM, HISTORY_KIND, SIDE = "item", "history", "side"
#: The graph's outputs, in order.
OUTPUTS = ({"name": "probability", "dtype": "float32", "shape": [BATCH],
            "meaning": "sigmoid(logit), computed in the graph"},
           {"name": "logit", "dtype": "float32", "shape": [BATCH],
            "meaning": "the model's logit (what it was trained on)"})


@dataclass(frozen=True)
class InputSpec:
    """One graph input: ``name``, ``dtype`` (``int64``), ``shape`` (dimension names or sizes),
    ``kind`` (item | history | side) and ``vocab_size`` (values lie in ``[0, vocab_size)``)."""

    name: str
    dtype: str
    shape: tuple
    kind: str
    vocab_size: int

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "kind": self.kind, "vocab_size": self.vocab_size}


@dataclass
class Signature:
    """The content of ``signature.json`` (see the module docstring)."""

    format: str
    precision: str
    files: list
    inputs: list
    max_len: int
    padded_in_graph: bool
    item_vocab: int
    id_map: str | None = None
    items_encoded: bool = True
    ignored_fields: list = field(default_factory=list)
    data_schema: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    parity: dict | None = None
    created: str = ""

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "format": self.format,
            "precision": self.precision,
            "files": list(self.files),
            "inputs": [spec.to_dict() for spec in self.inputs],
            "dims": {BATCH: {"min": 1, "max": None}, HISTORY: {"min": 1, "max": self.max_len}},
            "outputs": [dict(output) for output in OUTPUTS],
            "history": {"max_len": self.max_len, "padding_id": 0, "left_padded": True,
                        "padded_in_graph": self.padded_in_graph},
            "items": {"vocab_size": self.item_vocab, "id_map": self.id_map,
                      "encoded_in_graph": self.items_encoded},
            "ignored_fields": list(self.ignored_fields),
            "data_schema": dict(self.data_schema),
            "source": dict(self.source),
            "versions": dict(self.versions),
            "parity": self.parity,
            "created": self.created,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict, where: str = SIGNATURE_FILE) -> "Signature":
        """Read a ``signature.json`` mapping; anything missing or malformed is a UserError."""
        try:
            if values.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {values.get('format_version')!r} is not "
                                 f"{FORMAT_VERSION}")
            inputs = [InputSpec(str(spec["name"]), str(spec["dtype"]), tuple(spec["shape"]),
                                str(spec["kind"]), int(spec["vocab_size"]))
                      for spec in values["inputs"]]
            history = values["history"]
            items = values["items"]
            signature = cls(format=str(values["format"]), precision=str(values["precision"]),
                            files=[str(name) for name in values["files"]], inputs=inputs,
                            max_len=int(history["max_len"]),
                            padded_in_graph=bool(history["padded_in_graph"]),
                            item_vocab=int(items["vocab_size"]), id_map=items.get("id_map"),
                            items_encoded=bool(items.get("encoded_in_graph", True)),
                            ignored_fields=list(values.get("ignored_fields", [])),
                            data_schema=dict(values.get("data_schema", {})),
                            source=dict(values.get("source", {})),
                            versions=dict(values.get("versions", {})),
                            parity=values.get("parity"), created=str(values.get("created", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise UserError(f"{where}: not a valid artifact signature ({detail})") from None
        kinds = [spec.kind for spec in inputs]
        if kinds.count(ITEM) != 1 or kinds.count(HISTORY_KIND) != 1 or signature.max_len < 1:
            raise UserError(f"{where}: not a valid artifact signature (it needs one item input, "
                            f"one history input and max_len >= 1)")
        return signature

    @classmethod
    def read(cls, folder) -> "Signature":
        """``folder/signature.json``; a missing or unreadable file is a UserError."""
        path = os.path.join(os.fspath(folder), SIGNATURE_FILE)
        if not os.path.isfile(path):
            raise UserError(f"{folder}: not an artifact folder (no {SIGNATURE_FILE}); make one "
                            f"with fuxictr-mmctr export")
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: not readable as JSON ({error})") from None
        if not isinstance(values, dict):
            raise UserError(f"{path}: not a valid artifact signature (not a JSON object)")
        return cls.from_dict(values, where=path)

    def replace(self, **changes) -> "Signature":
        return dataclasses.replace(self, **changes)

    @property
    def item_input(self) -> InputSpec:
        return next(spec for spec in self.inputs if spec.kind == ITEM)

    @property
    def history_input(self) -> InputSpec:
        return next(spec for spec in self.inputs if spec.kind == HISTORY_KIND)

    @property
    def side_inputs(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.kind == SIDE]
