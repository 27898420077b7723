"""Loader throughput: the challenge's pandas collator vs our typed-array loader (docs/data_path.md).

Measures, at batch 8192 and max_len 100 on MicroLens-shaped data (91,717 items):

* baseline: what the challenge code does per batch: ``DataFrame.iloc`` rows of the split,
  ``to_list`` the history, look every target and history item up in an item_info DataFrame
  indexed by id and ``to_list`` its tags and vectors into arrays;
* ours, ids only: :class:`BatchLoader` batches (what the model receives; item features are
  gathered later on the model's device);
* ours, ids + gather: the same plus :class:`ItemTable` gathers of tags and vectors for the
  target and all history items, here on the CPU;
* start-up: loading the train split the first time (parquet -> typed arrays + validation +
  cache) vs from the cache, each in a fresh process, with its peak memory (ru_maxrss);
* ItemEncoder projection cost: encode the whole table then gather, vs gather then encode every
  row (forward + backward, linear 128 -> 64 projection).

Writes ``benchmarks/results/throughput.md`` and ``.json``; the last printed line is
``loader_speedup_vs_pandas_collator=<baseline ms per batch / ours ids-only ms per batch>``.

    python benchmarks/throughput.py            # full synthetic data (generated if absent)
    python benchmarks/throughput.py --quick    # small self-generated data, a minute or so
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fuxictr_mmctr.data import schema as contract  # noqa: E402
from fuxictr_mmctr.fileio import write_text_atomic  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(REPO, "data", "MicroLens_synth_full"),
                        help="dataset folder (generated with the full preset when absent)")
    parser.add_argument("--quick", action="store_true",
                        help="small self-generated data (200k train rows), fewer batches")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--batches", type=int, default=None, help="timed batches for ours")
    parser.add_argument("--baseline-batches", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# data


def ensure_data(args) -> tuple[str, str]:
    """Dataset folder to measure and how it was made."""
    if args.quick:
        folder = os.path.join(REPO, "data", "MicroLens_bench_quick")
        if not os.path.exists(os.path.join(folder, "train.parquet")):
            write_random_dataset(folder, num_train=200_000)
        return folder, "random MicroLens-schema data, 200,000 train rows (--quick)"
    folder = args.data
    if os.path.exists(os.path.join(folder, "train.parquet")):
        return folder, f"{os.path.relpath(folder, REPO)} (existing)"
    try:
        from fuxictr_mmctr.data.synthetic import generate
    except ImportError:
        # Never fill the synthetic preset's folder with other data: the pipeline would use it.
        folder = os.path.join(REPO, "data", "MicroLens_bench_random_full")
        if not os.path.exists(os.path.join(folder, "train.parquet")):
            write_random_dataset(folder, num_train=3_600_000)
        return folder, ("random MicroLens-schema data, 3,600,000 train rows, 91,717 items "
                        "(the synthetic generator was not available)")
    print(f"generating the full synthetic preset into {folder} ...", flush=True)
    generate("full", seed=2025, out_dir=folder)
    return folder, f"{os.path.relpath(folder, REPO)} (synthetic preset full, seed 2025)"


def write_random_dataset(folder, num_train, seed=2025, chunk=1 << 18):
    """MicroLens-sized random data (real item/tag vocabularies) written in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = contract.MICROLENS_1M_X1
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    tags = rng.integers(1, schema.tag_vocab, (schema.item_vocab, schema.num_tags_per_item))
    tags[:, :2] = 0
    vectors = rng.normal(size=(schema.item_vocab, schema.item_emb_dim)).astype(np.float32)
    tags[0], vectors[0] = 0, 0
    pq.write_table(pa.table({contract.ITEM_ID: np.arange(schema.item_vocab),
                             contract.ITEM_TAGS: list(tags), contract.ITEM_EMB: list(vectors)},
                            schema=contract.pyarrow_schema(schema, contract.ITEM_INFO)),
                   os.path.join(folder, "item_info.parquet"))
    for split, rows in (("train", num_train), ("valid", 10_000)):
        arrow_schema = contract.pyarrow_schema(schema, split)
        with pq.ParquetWriter(os.path.join(folder, f"{split}.parquet"), arrow_schema) as writer:
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                history = rng.integers(1, schema.item_vocab, (n, schema.max_seq_len))
                lengths = rng.integers(1, schema.max_seq_len + 1, n)
                history[np.arange(schema.max_seq_len)[None] < (schema.max_seq_len - lengths)[:, None]] = 0
                flat = pa.array(history.reshape(-1))
                offsets = pa.array(np.arange(n + 1, dtype=np.int32) * schema.max_seq_len)
                writer.write_table(pa.table({
                    contract.USER_ID: rng.integers(1, schema.user_vocab, n),
                    contract.ITEM_SEQ: pa.ListArray.from_arrays(offsets, flat),
                    contract.LIKES_LEVEL: rng.integers(0, schema.level_vocab, n),
                    contract.VIEWS_LEVEL: rng.integers(0, schema.level_vocab, n),
                    contract.ITEM_ID: rng.integers(1, schema.item_vocab, n),
                    contract.LABEL: rng.integers(0, 2, n)}, schema=arrow_schema))


# ---------------------------------------------------------------------------------------------
# measurements


STARTUP_CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from fuxictr_mmctr.data.loader import load_split
split = load_split(sys.argv[1], cache_dir=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "rows": split.num_rows,
                  "from_cache": split.from_cache,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_startup(train_path) -> dict:
    """First (uncached) and second (cached) load of the train split, each in a new process."""
    cache_dir = tempfile.mkdtemp(prefix="bench-cache-", dir=os.path.dirname(train_path))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        runs = []
        for _ in range(2):
            output = subprocess.run([sys.executable, "-c", STARTUP_CHILD, train_path, cache_dir],
                                    check=True, capture_output=True, text=True, env=env).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    first, cached = runs
    return {"first_load_s": first["seconds"], "first_load_maxrss_mb": first["maxrss_mb"],
            "cached_load_s": cached["seconds"], "cached_load_maxrss_mb": cached["maxrss_mb"],
            "cached_hit": cached["from_cache"], "rows": first["rows"]}


class PandasCollator:
    """The challenge pipeline's per-batch work, as the challenge code does it (the baseline)."""

    def __init__(self, split_df, item_info_df):
        self.split_df = split_df
        self.item_info = item_info_df.set_index(contract.ITEM_ID)

    def __call__(self, rows):
        import torch

        batch_df = self.split_df.iloc[rows]
        batch = {name: torch.tensor(batch_df[name].to_numpy())
                 for name in (contract.USER_ID, contract.LIKES_LEVEL, contract.VIEWS_LEVEL,
                              contract.ITEM_ID, contract.LABEL)}
        history = np.array(batch_df[contract.ITEM_SEQ].to_list())
        batch[contract.ITEM_SEQ] = torch.tensor(history)
        target_info = self.item_info.loc[batch_df[contract.ITEM_ID].to_list()]
        history_info = self.item_info.loc[history.reshape(-1).tolist()]
        for prefix, info, shape in (("target", target_info, (len(rows),)),
                                    ("history", history_info, history.shape)):
            batch[f"{prefix}_{contract.ITEM_TAGS}"] = torch.tensor(
                np.array(info[contract.ITEM_TAGS].to_list())).view(*shape, -1)
            batch[f"{prefix}_{contract.ITEM_EMB}"] = torch.tensor(
                np.array(info[contract.ITEM_EMB].to_list())).view(*shape, -1)
        return batch


def measure_baseline(folder, batch_size, num_batches, rows_read) -> dict:
    """ms per batch of :class:`PandasCollator` on the first ``rows_read`` train rows.

    Reading only part of the split keeps its pandas object columns in memory bounds; the
    per-batch cost depends on the batch, not on the frame's length.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(os.path.join(folder, "train.parquet"))
    split_df = pa.Table.from_batches(
        [next(parquet.iter_batches(batch_size=rows_read))]).to_pandas()
    item_info_df = pq.read_table(os.path.join(folder, "item_info.parquet")).to_pandas()
    collate = PandasCollator(split_df, item_info_df)
    order = np.random.default_rng(0).permutation(len(split_df))
    collate(order[:batch_size])  # warm-up
    start = time.perf_counter()
    for step in range(num_batches):
        collate(order[(step % (len(order) // batch_size)) * batch_size:][:batch_size])
    seconds = (time.perf_counter() - start) / num_batches
    return {"ms_per_batch": seconds * 1e3, "samples_per_s": batch_size / seconds,
            "batches": num_batches, "frame_rows": len(split_df)}


def measure_ours(folder, batch_size, max_len, num_batches) -> dict:
    import torch

    from fuxictr_mmctr.data.item_table import ItemTable
    from fuxictr_mmctr.data.loader import BatchLoader, load_split

    train = load_split(os.path.join(folder, "train.parquet"))
    info = load_item_arrays(folder)
    table = ItemTable(info)
    loader = BatchLoader(train, batch_size=batch_size, shuffle=True, seed=0, max_len=max_len)
    results = {}
    # Whole epochs of id batches: the first faults the memory-mapped cache in, the second is
    # the steady state of every later epoch.
    for epoch, mode in enumerate(("ids_only_first_epoch", "ids_only")):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        count = sum(1 for _ in loader)
        seconds = (time.perf_counter() - start) / count
        results[mode] = {"ms_per_batch": seconds * 1e3, "samples_per_s": batch_size / seconds,
                         "batches": count}
    batches = iter(loader)
    next(batches)  # warm-up
    start, count = time.perf_counter(), 0
    for batch in batches:
        table(batch[contract.ITEM_ID])
        table(batch[contract.ITEM_SEQ])
        count += 1
        if count == num_batches:
            break
    seconds = (time.perf_counter() - start) / count
    results["ids_and_gather"] = {"ms_per_batch": seconds * 1e3,
                                 "samples_per_s": batch_size / seconds, "batches": count}
    results["torch_threads"] = torch.get_num_threads()
    return results


def load_item_arrays(folder) -> dict:
    from fuxictr_mmctr.data.arrays import read_columns

    schema = contract.load_schema(folder)
    columns = [c for c in schema.item_columns() if c.name != contract.ITEM_ID]
    arrays, _ = read_columns(os.path.join(folder, "item_info.parquet"), columns)
    return {name: np.array(values) for name, values in arrays.items()}


def measure_projection(folder, batch_size, max_len, repeats) -> dict:
    """ItemEncoder forward+backward for B x (L+1) ids, whole-table-first vs per-row encoding."""
    import torch

    from fuxictr_mmctr.data.feature_map import MMCTRFeatureMap
    from fuxictr_mmctr.data.item_table import ItemTable
    from fuxictr_mmctr.layers.item_encoder import ItemEncoder

    info = load_item_arrays(folder)
    table = ItemTable(info)
    schema = contract.load_schema(folder)
    feature_map = MMCTRFeatureMap("bench", folder)
    feature_map.features = {
        contract.ITEM_ID: {"source": "item", "type": "categorical", "vocab_size": table.num_rows,
                           "padding_idx": 0},
        contract.ITEM_TAGS: {"source": "item", "type": "sequence", "vocab_size": schema.tag_vocab,
                             "max_len": schema.num_tags_per_item, "padding_idx": 0},
        contract.ITEM_EMB: {"source": "item", "type": "frozen_embedding",
                            "pretrain_dim": schema.item_emb_dim, "projection": "linear",
                            "embedding_dim": 64},
    }
    item_ids = torch.randint(0, table.num_rows, (batch_size, max_len + 1))
    results = {"table_rows": table.num_rows, "gathered_rows": item_ids.numel()}
    for mode in ("table", "rows"):
        encoder = ItemEncoder(feature_map, table, embedding_dim=64, gather_mode=mode)
        encoder(item_ids).sum().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            encoder.zero_grad(set_to_none=True)
            encoder(item_ids).sum().backward()
        results[f"{mode}_ms"] = (time.perf_counter() - start) / repeats * 1e3
    return results


# ---------------------------------------------------------------------------------------------
# report


def machine() -> dict:
    import torch

    from fuxictr_mmctr.machine import cpu_model

    cpu = cpu_model()
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def markdown(report) -> str:
    m, base, ours = report["machine"], report["baseline"], report["ours"]
    startup, proj = report["startup"], report["projection"]
    rows = [
        ("challenge pandas collator (iloc + to_list + item_info lookups)",
         base["ms_per_batch"], base["samples_per_s"]),
        ("ours: ids only (BatchLoader), first epoch from a cold memory-mapped cache",
         ours["ids_only_first_epoch"]["ms_per_batch"], ours["ids_only_first_epoch"]["samples_per_s"]),
        ("ours: ids only (BatchLoader), later epochs", ours["ids_only"]["ms_per_batch"],
         ours["ids_only"]["samples_per_s"]),
        ("ours: ids + item-feature gather (ItemTable, CPU)", ours["ids_and_gather"]["ms_per_batch"],
         ours["ids_and_gather"]["samples_per_s"]),
    ]
    lines = [
        "# Loader throughput",
        "",
        f"Machine: {m['platform']}; CPU {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
        f"torch {m['torch']}, numpy {m['numpy']}.",
        f"Data: {report['data']}. Batch {report['batch_size']}, max_len {report['max_len']}, "
        f"shuffled. Produced by `python benchmarks/throughput.py"
        f"{' --quick' if report['quick'] else ''}`.",
        "",
        "| path | ms / batch | samples / s | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, ms, rate in rows:
        lines.append(f"| {name} | {ms:,.1f} | {rate:,.0f} | {base['ms_per_batch'] / ms:,.0f}x |")
    lines += [
        "",
        f"Baseline: {base['batches']} batches over the first {base['frame_rows']:,} train rows "
        f"(its per-batch cost does not depend on the frame's length). Ours: whole epochs of "
        f"{ours['ids_only']['batches']} id batches; {ours['ids_and_gather']['batches']} batches "
        f"with the gather; {ours['torch_threads']} torch threads. The speed-up line below uses "
        f"later epochs; item features are gathered on the model's device (on a GPU that gather "
        f"is a few ms; here the device is this CPU).",
        "",
        "| start-up (train split, fresh process) | seconds | peak memory (ru_maxrss) |",
        "|---|---:|---:|",
        f"| first load: parquet -> typed arrays + validation + cache write | "
        f"{startup['first_load_s']:.1f} | {startup['first_load_maxrss_mb']:,.0f} MB |",
        f"| cached load (np.load mmap) | {startup['cached_load_s']:.2f} | "
        f"{startup['cached_load_maxrss_mb']:,.0f} MB |",
        "",
        f"ItemEncoder forward + backward for {proj['gathered_rows']:,} item ids "
        f"(B x (L+1)), table of {proj['table_rows']:,} rows, linear 128 -> 64 projection: "
        f"encode the table then gather {proj['table_ms']:,.0f} ms, gather then encode every row "
        f"{proj['rows_ms']:,.0f} ms (gather_mode auto picks the table when it has no more rows "
        f"than the ids).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    quick = args.quick
    num_batches = args.batches or (20 if quick else 100)
    baseline_batches = args.baseline_batches or (2 if quick else 5)
    folder, data_note = ensure_data(args)
    print(f"data: {data_note}", flush=True)
    report = {"machine": machine(), "data": data_note, "quick": quick,
              "batch_size": args.batch_size, "max_len": args.max_len}
    print("start-up (first load, cached load) ...", flush=True)
    report["startup"] = measure_startup(os.path.join(folder, "train.parquet"))
    print(json.dumps(report["startup"]), flush=True)
    print("ours ...", flush=True)
    report["ours"] = measure_ours(folder, args.batch_size, args.max_len, num_batches)
    print(json.dumps(report["ours"]), flush=True)
    print("ItemEncoder projection: table-first vs per-row ...", flush=True)
    report["projection"] = measure_projection(folder, args.batch_size if not quick else 2048,
                                              args.max_len, repeats=3)
    print(json.dumps(report["projection"]), flush=True)
    print("baseline (pandas collator) ...", flush=True)
    report["baseline"] = measure_baseline(folder, args.batch_size, baseline_batches,
                                          rows_read=min(200_000, 1 << 18))
    print(json.dumps(report["baseline"]), flush=True)
    ratio = report["baseline"]["ms_per_batch"] / report["ours"]["ids_only"]["ms_per_batch"]
    gather_ratio = report["baseline"]["ms_per_batch"] / report["ours"]["ids_and_gather"]["ms_per_batch"]
    report["loader_speedup_vs_pandas_collator"] = ratio
    report["gather_speedup_vs_pandas_collator"] = gather_ratio
    name = "throughput_quick" if quick else "throughput"
    os.makedirs(args.out, exist_ok=True)
    text = markdown(report)
    write_text_atomic(os.path.join(args.out, f"{name}.md"), text)
    write_text_atomic(os.path.join(args.out, f"{name}.json"), json.dumps(report, indent=2) + "\n")
    print(text)
    print(f"gather_speedup_vs_pandas_collator={gather_ratio:.1f}")
    print(f"loader_speedup_vs_pandas_collator={ratio:.1f}")


if __name__ == "__main__":
    main()
