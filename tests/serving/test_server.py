"""``fuxictr-mmctr serve`` as a subprocess on a free localhost port, with a real HTTP client."""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr.serving.parity import TOLERANCES
from fuxictr_mmctr.serving.scoring import score_parquet
from tests.builders import REPO

VALID = os.path.join("data", "MicroLens_synth_tiny", "valid.parquet")
ROWS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(pt2_artifact, tmp_path_factory):
    """``(base url, process)`` of a running server; stopped (by its pid) after the module."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    log = open(tmp_path_factory.mktemp("server") / "serve.log", "w+", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "fuxictr_mmctr.cli", "serve", "--artifact", str(pt2_artifact),
         "--port", str(port), "--max-batch-rows", "256", "--max-wait-ms", "20",
         "--max-body-bytes", "200000"],
        cwd=tmp_path_factory.mktemp("anywhere"), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            pytest.fail(f"the server did not start: {log.read()[-2000:]}")
        time.sleep(0.3)
    yield url, process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.seek(0)
    output = log.read()
    assert "Traceback" not in output, output[-3000:]
    log.close()


@pytest.fixture(scope="module")
def valid_rows(serving_workdir):
    """The first ``ROWS`` valid rows as request rows (histories without their padding)."""
    table = pq.read_table(serving_workdir / VALID).slice(0, ROWS).to_pylist()
    rows = []
    for record in table:
        record.pop("label")
        record["item_seq"] = [item for item in record["item_seq"] if item != 0]
        rows.append(record)
    return rows


@pytest.fixture(scope="module")
def expected(pt2_artifact, serving_workdir):
    """What ``prediction.py --artifact`` gives for the same rows."""
    return score_parquet(str(pt2_artifact), str(serving_workdir / VALID))[:ROWS]


def assert_close(scores, reference):
    tolerance = TOLERANCES["fp32"]
    np.testing.assert_allclose(scores, reference, rtol=tolerance.rtol, atol=tolerance.atol)


def test_scores_match_prediction_from_the_artifact(server, valid_rows, expected):
    url, _ = server
    response = httpx.post(url + "/score", json={"rows": valid_rows}, timeout=60)
    assert response.status_code == 200
    assert_close(response.json()["scores"], expected)
    # One row at a time (batch of 1), and a history sent with its left padding.
    single = dict(valid_rows[5], item_seq=[0] * 3 + valid_rows[5]["item_seq"])
    response = httpx.post(url + "/score", json={"rows": [single]}, timeout=60)
    assert_close(response.json()["scores"], expected[5:6])


def test_concurrent_requests_are_micro_batched_in_row_order(server, valid_rows, expected):
    url, _ = server
    before = httpx.get(url + "/health").json()

    def post(index):
        chunk = valid_rows[index * 4:(index + 1) * 4]
        return index, httpx.post(url + "/score", json={"rows": chunk}, timeout=60).json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(post, range(ROWS // 4)))
    for index, answer in answers:
        assert_close(answer["scores"], expected[index * 4:(index + 1) * 4])
    after = httpx.get(url + "/health").json()
    assert after["rows_scored"] - before["rows_scored"] == ROWS
    assert after["model_calls"] - before["model_calls"] <= ROWS // 4


BAD_REQUESTS = [
    ({"rows": [{"item_id": 9999}]}, "row 0: field item_seq is missing"),
    (lambda rows: {"rows": [rows[0], dict(rows[1], item_id=9999)]},
     "row 1, field item_id: unknown item id 9999 (item ids are 1..300)"),
    (lambda rows: {"rows": [dict(rows[0], item_seq=list(range(1, 22)))]},
     "row 0, field item_seq: a history of 21 items is longer than max_len 20"),
    (lambda rows: {"rows": [dict(rows[0], likes_level="high")]},
     "row 0, field likes_level: expected an integer, got 'high'"),
    (lambda rows: {"rows": [{key: value for key, value in rows[0].items()
                             if key != "views_level"}]},
     "row 0: field views_level is missing"),
    ({"rows": []}, "field rows is empty: send at least one row"),
    (b"{\"rows\": [", "the body is not valid JSON"),
    (lambda rows: {"rows": rows * 200},
     re.compile(r"the body of \d+ bytes is larger than the limit of 200000 bytes")),
]


@pytest.mark.parametrize("body, message", BAD_REQUESTS)
def test_bad_requests_get_a_400_with_one_line(server, valid_rows, expected, body, message):
    url, _ = server
    body = body(valid_rows) if callable(body) else body
    if isinstance(body, bytes):
        response = httpx.post(url + "/score", content=body,
                              headers={"content-type": "application/json"}, timeout=60)
    else:
        response = httpx.post(url + "/score", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    pattern = message if isinstance(message, re.Pattern) else re.compile(re.escape(message))
    assert pattern.match(error) and "\n" not in error and "Traceback" not in error
    # The server keeps serving.
    good = httpx.post(url + "/score", json={"rows": valid_rows[:2]}, timeout=60)
    assert good.status_code == 200
    assert_close(good.json()["scores"], expected[:2])


def test_health_and_metadata(server, pt2_artifact):
    url, process = server
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.get(url + "/metadata").json() == json.loads(
        (pt2_artifact / "signature.json").read_text())
    assert httpx.get(url + "/nothing").status_code == 404
    assert process.poll() is None


def test_a_busy_port_is_one_error_line(pt2_artifact, tmp_path):
    from tests.serving.conftest import run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--artifact", str(pt2_artifact), "--port", str(port)],
                         cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1
