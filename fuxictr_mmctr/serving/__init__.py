"""Serving: a trained model as a self-contained artifact, scored without the training code.

One job per module (docs/serving.md)::

    optional.py   the ``serve`` extra's packages, imported with a one-line hint when missing
    signature.py  signature.json: the graph's inputs, outputs, dynamic dimensions, provenance
    graph.py      ServingGraph: the trained model as ``ids -> (probability, logit)``
    exporters.py  the graph to ``model.pt2`` (torch.export), ``model.onnx`` or an AOTI package
    artifact.py   an artifact folder: written atomically, loaded, scored (pt2, ONNX Runtime, AOTI)
    parity.py     the check before writing: eager vs exported on real validation rows
    export.py     ``fuxictr-mmctr export``: checkpoint -> graph -> parity -> artifact folder
    scoring.py    ``prediction.py --artifact``: a parquet file scored with the artifact alone
    rows.py       JSON request rows -> id arrays, each mistake one line naming field and row
    batcher.py    micro-batching of concurrent requests onto one model call
    server.py     ``fuxictr-mmctr serve``: FastAPI app (POST /score, GET /health, GET /metadata)
"""
