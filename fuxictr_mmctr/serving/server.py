"""``fuxictr-mmctr serve``: score JSON requests over HTTP with an artifact (FastAPI + uvicorn).

::

    POST /score     {"rows": [{"item_id": 17, "item_seq": [3, 9, 4], "likes_level": 2,
                               "views_level": 5, "user_id": 81}, ...]}
                    -> 200 {"scores": [0.31, ...]}       one probability per row, in row order
                    -> 400 {"error": "row 3, field item_id: unknown item id 99999 ..."}
    GET  /health    -> 200 {"status": "ok", "model_calls": N, "rows_scored": M}
    GET  /metadata  -> 200 the artifact's signature.json

Scores are ``sigmoid(logit)`` in float64, as ``prediction.py`` writes them. Concurrent
requests are micro-batched (:mod:`fuxictr_mmctr.serving.batcher`). A bad request (not JSON,
a missing or unknown field, a wrong type, an unknown item id, a history longer than max_len,
no rows, a body over ``--max-body-bytes``) gets a 400 with one line naming the field and the
row (:mod:`fuxictr_mmctr.serving.rows`); an unexpected failure gets a 500 with one line. No
traceback ever reaches a client, and the server keeps serving.
"""

import contextlib
import json
import logging
import socket
import sys

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import optional
from fuxictr_mmctr.serving.artifact import Artifact, probabilities
from fuxictr_mmctr.serving.batcher import MicroBatcher
from fuxictr_mmctr.serving.rows import RequestError, parse_rows
from fuxictr_mmctr.serving.signature import SIGNATURE_FILE

logger = logging.getLogger("fuxictr_mmctr.serve")
#: Default limit of a request body.
MAX_BODY_BYTES = 8 * 1024 * 1024


class _BadRequest(Exception):
    """Raised inside a handler; answered with 400 and its one line."""


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused (one line) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _BadRequest("the Content-Length header is not a number") from None
        if size > limit:
            raise _BadRequest(f"the body of {size} bytes is larger than the limit of {limit} "
                              f"bytes; send fewer rows per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(f"the body is larger than the limit of {limit} bytes; send fewer "
                              f"rows per request")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(artifact: Artifact, max_batch_rows: int = 1024, max_wait_ms: float = 2.0,
               max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI application serving ``artifact`` (module docstring)."""
    fastapi = optional.require("fastapi", "fuxictr-mmctr serve")
    from fastapi.responses import JSONResponse

    signature = artifact.signature
    batcher = MicroBatcher(artifact.logits, signature.input_names,
                           max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms)
    with open(f"{artifact.folder}/{SIGNATURE_FILE}", encoding="utf-8") as handle:
        metadata = json.load(handle)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = fastapi.FastAPI(title="fuxictr-mmctr", lifespan=lifespan, docs_url=None,
                          redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # the last resort: one line, never a traceback
        logger.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error while scoring ({type(exc).__name__}); the server "
                          f"keeps serving")

    @app.post("/score")
    async def score(request: fastapi.Request):
        try:
            body = await _read_body(request, max_body_bytes)
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _BadRequest(f"the body is not valid JSON ({exc})") from None
            columns, rows = parse_rows(payload, signature, artifact.item_ids)
        except (_BadRequest, RequestError) as exc:
            return error(400, str(exc))
        try:
            logits = await batcher.score(columns, rows)
        except Exception as exc:  # a model failure is this request's, not the server's
            logger.exception("scoring failed")
            return error(500, f"internal error while scoring ({type(exc).__name__}); the "
                              f"server keeps serving")
        return {"scores": probabilities(logits).tolist()}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_calls": batcher.calls, "rows_scored": batcher.rows}

    @app.get("/metadata")
    async def get_metadata():
        return metadata

    return app


def check_port(host: str, port: int) -> None:
    """The address can be listened on (one line otherwise, before the model is loaded)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a port number (0..65535)")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(artifact_dir: str, host: str = "127.0.0.1", port: int = 8080,
          max_batch_rows: int = 1024, max_wait_ms: float = 2.0, threads: int | None = None,
          max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Load the artifact and serve it until interrupted."""
    uvicorn = optional.require("uvicorn", "fuxictr-mmctr serve")
    optional.require("fastapi", "fuxictr-mmctr serve")
    if max_batch_rows < 0:
        raise UserError(f"--max-batch-rows {max_batch_rows}: must be >= 0 (0: no micro-batching)")
    if max_wait_ms < 0:
        raise UserError(f"--max-wait-ms {max_wait_ms}: must be >= 0")
    if max_body_bytes < 1:
        raise UserError(f"--max-body-bytes {max_body_bytes}: must be >= 1")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: must be >= 1")
        import torch

        torch.set_num_threads(threads)
    check_port(host, port)
    artifact = Artifact.load(artifact_dir, threads=threads)
    app = create_app(artifact, max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms,
                     max_body_bytes=max_body_bytes)
    batching = (f"micro-batching up to {max_batch_rows} rows / {max_wait_ms:g} ms"
                if max_batch_rows else "no micro-batching")
    print(f"serving {artifact_dir} ({artifact.signature.format}, "
          f"{artifact.signature.source.get('expid', '?')}) on http://{host}:{port} "
          f"({batching})", flush=True)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
