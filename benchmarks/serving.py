"""Serving latency: eager vs the pt2 graph vs ONNX Runtime, artifact sizes, and a load test.

For each model (Transformer_DCN, DIN, QIN at their demo configurations):

* **artifacts**: ``fuxictr-mmctr export``'s pt2 and ONNX folders (with their parity check),
  their sizes on disk next to the checkpoint's;
* **per-call latency** at batch 1, 64 and 1024: p50 / p90 / p99 milliseconds of one call on
  real validation rows (random rows, fixed seed; each batch's history cut to its longest real
  history, as the server sends it), for the eager model (``model(batch)`` under ``no_grad``),
  the pt2 graph (``torch.export.load(...).module()``) called once per batch and as an
  artifact calls it (in history-length groups from 256 rows on), and ONNX Runtime (as an
  artifact calls it), all on the CPU with
  ``--threads`` intra-op threads;
* **load test** of ``fuxictr-mmctr serve`` (first model, pt2): ``--requests`` requests in all
  (default 2,000) from ``--clients`` concurrent clients sending back to back, once per request
  size of ``--request-rows`` (default 1 and 32 rows), with micro-batching on
  (``--max-batch-rows 1024 --max-wait-ms 2``) and off (``--max-batch-rows 0``): requests/s,
  rows/s, per-request latency percentiles as the clients see them, and the failed requests
  (any answer but 200; there must be none).

Demo checkpoints (``checkpoints/MicroLens_synth_demo/<expid>.model``) are used when present;
otherwise the models keep their initial weights (latency does not depend on the weights; the
report says which). Nothing in ``checkpoints/`` or ``data/`` is written: artifacts go to a
temporary folder.

    python benchmarks/serving.py                 # demo configs -> benchmarks/results/serving.md
    python benchmarks/serving.py --real --clients 0   # real MicroLens50k rows -> serving_real50k.md
    python benchmarks/serving.py --quick         # tiny configs, self-generated tiny data, fewer
                                                 # repetitions -> results/serving_quick.md
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fuxictr_mmctr.fileio import write_text_atomic  # noqa: E402

MODELS = ("Transformer_DCN", "DIN", "QIN")
BATCH_SIZES = (1, 64, 1024)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny configs on self-generated tiny data, fewer repetitions")
    parser.add_argument("--real", action="store_true",
                        help="the <Model>_MicroLens50k configs on the real MicroLens50k rows "
                             "(data/MicroLens50k, made by fuxictr-mmctr microlens) -> "
                             "results/serving_real50k.md")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per (model, runtime, batch) (default 200, quick 30)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--clients", type=int, default=None,
                        help="concurrent clients of the load test (default 16, quick 8)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per load test (default 2000, quick 200)")
    parser.add_argument("--request-rows", default="1,32",
                        help="rows per request, one load test each (default 1,32)")
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# models and artifacts
def load_model(name: str, quick: bool, config: str, workdir: str, real: bool = False):
    """``(model, feature_map, catalogue, params, weights)`` of ``<name>``'s demo (tiny, or
    real-data) expid; ``weights`` says whether a trained checkpoint was loaded."""
    from fuxictr_mmctr.pipeline.experiment import build_model, load_params, prepare

    expid = (f"{name}_MicroLens50k" if real
             else f"{name}_MicroLens_{'tiny' if quick else 'demo'}")
    params = load_params(config, expid)
    params["gpu"], params["verbose"] = -1, 0
    if quick:
        data = os.path.join(workdir, "tiny_data")
        if not os.path.exists(os.path.join(data, "train.parquet")):
            from fuxictr_mmctr.data.synthetic import generate

            generate("tiny", seed=2025, out_dir=data, verbose=False)
        for key in ("train_data", "valid_data", "test_data", "item_info"):
            params[key] = os.path.join(data, os.path.basename(params[key]))
        params["data_root"] = os.path.join(workdir, "feature_maps")
    checkpoint = os.path.join(REPO, "checkpoints", params["dataset_id"], f"{expid}.model")
    params["model_root"] = os.path.join(workdir, "checkpoints")
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    trained = not quick and os.path.exists(checkpoint)
    if trained:
        model.load_weights(checkpoint)
    model.eval()
    return expid, model, feature_map, catalogue, params, (checkpoint if trained else None)


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


# ---------------------------------------------------------------------------------------------
# per-call latency
def request_batches(split, input_names, max_len: int, batch: int, count: int, seed: int = 0):
    """``count`` batches of ``batch`` random valid rows, as id arrays; each history cut to the
    batch's longest real history (at least one column)."""
    from fuxictr_mmctr.serving.parity import full_width, spans

    rng = np.random.default_rng(seed + batch)
    batches = []
    for _ in range(count):
        rows = np.sort(rng.integers(0, split.num_rows, batch))
        columns = {name: np.asarray(split.columns[name][rows], dtype=np.int64)
                   for name in input_names}
        history = full_width(columns["item_seq"], max_len)
        width = max(int(spans(history).max(initial=0)), 1)
        columns["item_seq"] = np.ascontiguousarray(history[:, max_len - width:])
        batches.append(columns)
    return batches


def percentiles(seconds) -> dict:
    values = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "calls": int(len(values))}


def time_calls(call, batches, repeats: int, warmup: int = 3) -> dict:
    for index in range(warmup):
        call(batches[index % len(batches)])
    times = []
    for index in range(repeats):
        columns = batches[index % len(batches)]
        start = time.perf_counter()
        call(columns)
        times.append(time.perf_counter() - start)
    return percentiles(times)


def eager_call(model):
    import torch

    def call(columns):
        with torch.no_grad():
            return model({name: torch.from_numpy(values) for name, values in columns.items()})
    return call


# ---------------------------------------------------------------------------------------------
# load test
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(artifact: str, max_batch_rows: int, threads: int, log_path: str):
    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(threads))
    log = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "fuxictr_mmctr.cli", "serve", "--artifact", artifact, "--port",
         str(port), "--max-batch-rows", str(max_batch_rows), "--max-wait-ms", "2", "--threads",
         str(threads)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, process, log
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    log.close()
    raise SystemExit(f"the server did not start; see {log_path}")


def load_test(url: str, rows: list, clients: int, requests: int, request_rows: int) -> dict:
    """``clients`` threads posting ``requests`` requests of ``request_rows`` rows in all, each
    client taking the next request number as soon as its previous answer came back."""
    import itertools
    import threading

    import httpx

    numbers, lock = itertools.count(), threading.Lock()

    def client(_):
        latencies, failures = [], 0
        with httpx.Client(timeout=60) as session:
            while True:
                with lock:
                    number = next(numbers)
                if number >= requests:
                    break
                first = number * request_rows
                body = {"rows": [rows[(first + offset) % len(rows)]
                                 for offset in range(request_rows)]}
                start = time.perf_counter()
                response = session.post(url + "/score", json=body)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200
        return latencies, failures

    before = _health(url)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - start
    after = _health(url)
    latencies = [value for result in results for value in result[0]]
    calls = after["model_calls"] - before["model_calls"]
    return {"clients": clients, "seconds": elapsed, "requests": len(latencies),
            "request_rows": request_rows, "failures": sum(result[1] for result in results),
            "requests_per_second": len(latencies) / elapsed,
            "rows_per_second": len(latencies) * request_rows / elapsed, "model_calls": calls,
            "rows_per_model_call": (after["rows_scored"] - before["rows_scored"]) / max(calls, 1),
            **percentiles(latencies)}


def _health(url: str) -> dict:
    import httpx

    return httpx.get(url + "/health", timeout=10).json()


def request_rows(split, count: int, seed: int = 1) -> list:
    """``count`` valid rows as JSON request rows (histories without padding)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in rng.integers(0, split.num_rows, count):
        history = np.asarray(split.columns["item_seq"][index])
        rows.append({"item_id": int(split.columns["item_id"][index]),
                     "item_seq": [int(item) for item in history if item != 0],
                     "likes_level": int(split.columns["likes_level"][index]),
                     "views_level": int(split.columns["views_level"][index])})
    return rows


# ---------------------------------------------------------------------------------------------
# report
def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def markdown(report: dict) -> str:
    title = (" (quick: tiny configs, untrained)" if report["quick"]
             else " (real MicroLens50k rows)" if report.get("real") else "")
    lines = [f"# Serving latency{title}",
             "", f"`{' '.join(['python benchmarks/serving.py', report.get('argv', '')]).strip()}`"
             " on "
             f"{report['machine']}; {report['threads']} intra-op thread(s); "
             f"{report['repeats']} timed calls per cell; load average "
             f"{report['load_average'][0]:.1f} at the start (other jobs share the cores when it "
             f"is near or above the core count). Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".", "",
             "## Artifacts", "",
             "| expid | weights | history in the graph | checkpoint MB (initial: state dict) | "
             "pt2 MB | onnx MB | "
             "parity max abs logit diff (pt2 / onnx) |", "|---|---|---|---|---|---|---|"]
    for model in report["models"]:
        lines.append(f"| {model['expid']} | {model['weights']} | {model['history']} | "
                     f"{model['checkpoint_mb']:.2f} | {model['pt2_mb']:.2f} | "
                     f"{model['onnx_mb']:.2f} | {model['parity_pt2']:.2g} / "
                     f"{model['parity_onnx']:.2g} |")
    runtimes = ("eager", "pt2, one call", "pt2", "onnxruntime")
    lines += ["", "## Per-call latency (ms, p50 / p90 / p99)", "",
              "`pt2, one call`: the whole batch in one graph call at its longest history; `pt2` "
              "and `onnxruntime`: as an artifact scores a batch, in history-length groups from "
              "256 rows on (docs/serving.md).", "",
              "| expid | batch | " + " | ".join(runtimes) + " |", "|---|---|---|---|---|---|"]
    for model in report["models"]:
        for batch, cells in model["latency"].items():
            row = [f"{cells[name]['p50_ms']:.2f} / {cells[name]['p90_ms']:.2f} / "
                   f"{cells[name]['p99_ms']:.2f}" if name in cells else "—" for name in runtimes]
            lines.append(f"| {model['expid']} | {batch} | " + " | ".join(row) + " |")
    load = report.get("load_test")
    if load:
        first = load["runs"][0]
        lines += ["", f"## Load test: `fuxictr-mmctr serve` ({load['expid']}, pt2), "
                  f"{first['clients']} clients, {first['requests']:,} requests per row", "",
                  "| rows per request | micro-batching | requests/s | rows/s | rows per model "
                  "call | p50 ms | p90 ms | p99 ms | failed requests |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cell in load["runs"]:
            label = "on (1024 rows / 2 ms)" if cell["micro_batching"] else "off"
            lines.append(f"| {cell['request_rows']} | {label} | "
                         f"{cell['requests_per_second']:,.0f} | {cell['rows_per_second']:,.0f} | "
                         f"{cell['rows_per_model_call']:.1f} | {cell['p50_ms']:.1f} | "
                         f"{cell['p90_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['failures']} |")
        lines += ["", "The clients run in the benchmark's process (Python threads, httpx) on the "
                  "same machine as the server, so they share its cores."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from fuxictr_mmctr.serving.artifact import Artifact
    from fuxictr_mmctr.serving.export import _versions, write_artifact
    from fuxictr_mmctr.serving.graph import graph_inputs

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (30 if args.quick else 200)
    clients = args.clients if args.clients is not None else (8 if args.quick else 16)
    requests = args.requests or (200 if args.quick else 2000)
    request_sizes = [int(size) for size in args.request_rows.split(",")]
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    workdir = tempfile.mkdtemp(prefix="serving_benchmark_")
    report = {"quick": args.quick, "real": args.real, "argv": " ".join(argv or sys.argv[1:]),
              "machine": machine(), "threads": args.threads,
              "load_average": [round(value, 2) for value in os.getloadavg()],
              "repeats": repeats, "versions": _versions(), "models": []}
    first_pt2 = first_split = None
    try:
        for name in [name.strip() for name in args.models.split(",") if name.strip()]:
            expid, model, feature_map, catalogue, params, checkpoint = load_model(
                name, args.quick, args.config, workdir, real=args.real)
            print(f"{expid}: exporting", flush=True)
            artifacts = {}
            for fmt in ("pt2", "onnx"):
                out = os.path.join(workdir, f"{expid}_{fmt}")
                result = write_artifact(model, feature_map, catalogue, params["valid_data"], out,
                                        fmt, source={"expid": expid})
                artifacts[fmt] = (out, result)
            split = catalogue.load_split(params["valid_data"])
            names = [spec.name for spec in graph_inputs(feature_map, catalogue.num_rows)]
            max_len = int(model.max_len or catalogue.schema.max_seq_len)
            pt2 = Artifact.load(artifacts["pt2"][0])
            runtimes = {"eager": eager_call(model),
                        "pt2, one call": lambda columns, pt2=pt2: pt2.logits(columns,
                                                                             by_length=False),
                        "pt2": pt2.logits,
                        "onnxruntime": Artifact.load(artifacts["onnx"][0],
                                                     threads=args.threads).logits}
            latency = {}
            for batch in batch_sizes:
                batches = request_batches(split, names, max_len, batch, count=8)
                latency[batch] = {runtime: time_calls(call, batches, repeats)
                                  for runtime, call in runtimes.items()}
                print(f"{expid} batch {batch}: " + ", ".join(
                    f"{runtime} p50 {cell['p50_ms']:.2f} ms"
                    for runtime, cell in latency[batch].items()), flush=True)
            parity = {fmt: max([result["parity"]["valid_rows"]["max_abs_logit_diff"]]
                               + [probe["max_abs_logit_diff"]
                                  for probe in result["parity"]["probes"].values()])
                      for fmt, (_, result) in artifacts.items()}
            state_bytes = sum(tensor.numel() * tensor.element_size()
                              for tensor in model.state_dict().values())
            report["models"].append({
                "expid": expid, "weights": "trained" if checkpoint else "initial",
                "history": ("padded to max_len" if artifacts["pt2"][1]["padded_in_graph"]
                            else "as given"),
                "checkpoint_mb": (os.path.getsize(checkpoint) if checkpoint else state_bytes) / 1e6,
                "pt2_mb": folder_bytes(artifacts["pt2"][0]) / 1e6,
                "onnx_mb": folder_bytes(artifacts["onnx"][0]) / 1e6,
                "parity_pt2": parity["pt2"], "parity_onnx": parity["onnx"],
                "latency": latency})
            if first_pt2 is None:
                first_pt2, first_split, first_expid = artifacts["pt2"][0], split, expid
        if first_pt2 is not None and clients > 0:
            rows = request_rows(first_split, 4096)
            load = {"expid": first_expid, "runs": []}
            for key, max_batch_rows in (("on", 1024), ("off", 0)):
                url, process, log = start_server(first_pt2, max_batch_rows, args.threads,
                                                 os.path.join(workdir, f"serve_{key}.log"))
                try:
                    for size in request_sizes:
                        cell = load_test(url, rows, clients, requests, size)
                        cell["micro_batching"] = max_batch_rows > 0
                        load["runs"].append(cell)
                        print(f"load test, {size} rows per request, micro-batching {key}: "
                              f"{cell['requests_per_second']:.0f} requests/s, "
                              f"{cell['rows_per_second']:.0f} rows/s, p50 "
                              f"{cell['p50_ms']:.1f} ms, p99 {cell['p99_ms']:.1f} ms, "
                              f"{cell['failures']} failed", flush=True)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
                    log.close()
            load["runs"].sort(key=lambda cell: (cell["request_rows"], not cell["micro_batching"]))
            report["load_test"] = load
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stem = "serving_quick" if args.quick else "serving_real50k" if args.real else "serving"
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, f"{stem}.json"),
                      json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(os.path.join(args.out, f"{stem}.md"), markdown(report))
    print(f"wrote {os.path.join(args.out, stem)}.md and .json")


if __name__ == "__main__":
    main()
