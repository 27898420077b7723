"""``prediction.py --artifact DIR --data X.parquet --out scores.csv``: scores from an artifact.

Nothing but the artifact folder is read besides the data: no config folder, no checkpoint, no
item_info. The parquet file is read and checked against the dataset schema recorded in
``signature.json`` (the same checks as ``prediction.py --expid``: columns, list lengths, id
ranges; a catalogue's own item ids are mapped with the artifact's ``item_ids.parquet``), scored
in batches and written as ``ID,score`` in row order, with ``score = sigmoid(logit)`` in float64
as ``prediction.py --expid`` writes it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving.artifact import Artifact, probabilities

#: Rows per graph call.
BATCH_ROWS = 4096


def dataset_schema(artifact: Artifact) -> contract.Schema:
    """The trained dataset's :class:`~fuxictr_mmctr.data.schema.Schema` from signature.json."""
    known = {field.name for field in dataclasses.fields(contract.Schema)}
    values = artifact.signature.data_schema
    try:
        return contract.Schema(**{key: int(value) for key, value in values.items()
                                  if key in known})
    except (TypeError, ValueError) as error:
        raise UserError(f"{artifact.folder}: signature.json has no valid data_schema "
                        f"({error})") from None


def score_parquet(artifact_dir: str, data_path: str, batch_rows: int = BATCH_ROWS,
                  artifact: Artifact | None = None) -> np.ndarray:
    """Scores ``(N,) float64`` of every row of ``data_path``, in row order."""
    from fuxictr_mmctr.data.loader import load_split

    artifact = artifact or Artifact.load(artifact_dir)
    split = load_split(data_path, schema=dataset_schema(artifact), cache_dir=False,
                       remap=artifact.item_ids.remap, item_rows=artifact.item_ids.num_rows)
    scores = probabilities(artifact.score_split(split, batch_rows=batch_rows))
    if len(scores) != split.num_rows:
        raise UserError(f"{data_path}: scored {len(scores)} rows but the file has "
                        f"{split.num_rows}")
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{data_path}: the artifact produced non-finite scores")
    return scores
