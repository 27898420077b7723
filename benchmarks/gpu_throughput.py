"""Training throughput of the speed switches: samples/s, peak memory, achieved FLOP rate.

For each model at its challenge configuration (``Transformer_DCN_MicroLens``: the paper's sizes,
``QIN_MicroLens``, ``DIN_MicroLens``) on the ``full`` synthetic data (MicroLens sizes: 91,717
items, histories of 100, generated on first use), it times training steps at batch 128, 1024
and 8192 under

* ``fp32``: float32 (TF32 matmuls and fused Adam on CUDA), the split held on the device;
* ``bf16``: the same with ``precision: bf16``;
* ``bf16+packed``: and ``packed_history: true`` (length buckets / jagged attention, batches
  trimmed to their longest history). Rows without ``+packed`` run unpacked;
* ``bf16+compile``: ``bf16`` with ``compile: true``;
* ``bf16+compile+packed``: both.

and a **baseline** row, the published configuration's way: batch 128, fp32 without TF32 or
fused Adam, unpacked, and each batch's item features (tags and frozen vectors of the target and
of every history item) looked up on the host and copied to the device, as the challenge's
collator does (here with numpy gathers, cheaper than its pandas lookups: a lower bound on its
cost; the model still reads the same features from its device-side table).

Every eager row of every model runs first, the compiled rows last (a compilation that fails or
takes long costs only the compiled rows); each model, and its split on the device, is built once
and serves all its rows. An exception in a row is that row's result (its first line, in the
samples/s column) and the run goes on; the traceback goes to stderr.

Each row: training samples/s over ``--seconds`` of steps after warm-up (the batch fetch
included), peak device memory, model FLOPs per step (forward + backward, counted with
``torch.utils.flop_counter`` on one eager step of that row's model, so a packed row counts only
the work it does), the achieved FLOP rate and the **model FLOP utilisation** (MFU: achieved
FLOP/s over the device's dense bf16 peak, from :data:`BF16_PEAK` by device name; ``n/a`` on a
CPU or a device the table lacks, unless ``--peak-tflops`` gives it).

Writes ``benchmarks/results/gpu_throughput.{md,json}`` naming the device. On a machine without
a GPU it runs a scaled-down smoke version (the ``_tiny`` expids on the ``tiny`` preset, batch
128 and 1024, rows fp32, bf16 and bf16+packed: compiling would dominate it) and writes
``gpu_throughput_cpu_smoke.{md,json}``: those figures are CPU figures, not GPU ones.

    python benchmarks/gpu_throughput.py                       # everything (GPU) / smoke (CPU)
    python benchmarks/gpu_throughput.py --models Transformer_DCN --batch-sizes 1024 --seconds 5
    python benchmarks/gpu_throughput.py --budget-s 300        # stop starting rows after 300 s
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from fuxictr_mmctr.data import schema as contract  # noqa: E402
from fuxictr_mmctr.fileio import write_text_atomic  # noqa: E402

CONFIG_DIR = os.path.join(REPO, "config")
MODELS = ("Transformer_DCN", "QIN", "DIN")
#: Variant name -> (precision, compile, packed).
VARIANTS = {
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "bf16+compile": ("bf16", True, False),
    "bf16+compile+packed": ("bf16", True, True),
    "fp32+packed": ("fp32", False, True),
    "fp32+compile": ("fp32", True, False),
    "fp16": ("fp16", False, False),
    "bf16+packed": ("bf16", False, True),
    "fp32+compile+packed": ("fp32", True, True),
}
#: ``--scale`` -> (expid suffix, synthetic dataset id).
SCALES = {"paper": ("", "MicroLens_synth_full"), "demo": ("_demo", "MicroLens_synth_demo"),
          "tiny": ("_tiny", "MicroLens_synth_tiny")}
#: The rows of a GPU run, and of the CPU smoke run (no compile rows: compiling dominates it).
GPU_VARIANTS = ("fp32", "bf16", "bf16+packed", "bf16+compile", "bf16+compile+packed")
SMOKE_VARIANTS = ("fp32", "bf16", "bf16+packed")
#: Compiled rows warm up until this many steps in a row compile nothing new (at most 40 steps).
SETTLED_STEPS = 3
BASELINE = "baseline: published way (fp32, host-side item lookups)"
#: Dense (not 2:4 sparse) bf16 tensor-core peak in FLOP/s by device-name fragment, from the
#: vendors' data sheets; the first fragment found in the name wins (so "H100 PCIe" before "H100").
BF16_PEAK = (("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
             ("H100", 989e12), ("H800", 989e12), ("B200", 2250e12), ("A100", 312e12),
             ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
             ("A10G", 70e12), ("A10", 125e12))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated model names (their <Model>_MicroLens expids)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated (default 128,1024,8192; CPU smoke 128,1024)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default "
                             f"{','.join(GPU_VARIANTS)}; CPU smoke {','.join(SMOKE_VARIANTS)})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per row (default 3 on GPU, 1.5 CPU smoke)")
    parser.add_argument("--max-steps", type=int, default=200, help="timed steps per row, at most")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, interleaved, and report the "
                             "median rate (for a machine shared with other work)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new row after this many seconds (rows left: 'skipped')")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak, if the built-in table lacks it")
    parser.add_argument("--scale", choices=sorted(SCALES), default=None,
                        help="configs and data: paper (<Model>_MicroLens on the full preset; "
                             "default on a GPU), demo (<Model>_MicroLens_demo on the demo "
                             "preset) or tiny (default on the CPU)")
    parser.add_argument("--gpu", type=int, default=0, help="GPU index; -1: the CPU smoke run")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "benchmarks", "results"))
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# models and data


def experiment_params(model_name: str, scale: str, gpu: int, model_root: str) -> dict:
    """The model's expid of ``scale`` (:data:`SCALES`) on that scale's synthetic data."""
    from fuxictr_mmctr.pipeline import config_check

    suffix, dataset_id = SCALES[scale]
    expid = f"{model_name}_MicroLens{suffix}"
    params = config_check.load_params(CONFIG_DIR, expid, gpu)
    datasets = config_check.read_yaml(os.path.join(CONFIG_DIR, "dataset_config.yaml"))
    params.update(datasets[dataset_id], dataset_id=dataset_id, gpu=gpu, verbose=0,
                  model_root=model_root, save_resume_state=False)
    for key in ("train_data", "valid_data", "test_data", "item_info", "data_root"):
        if isinstance(params.get(key), str) and not os.path.isabs(params[key]):
            params[key] = os.path.normpath(os.path.join(REPO, params[key]))
    return config_check.check_params(params, where=expid)


class BuiltModel:
    """A model with its train split and that split's loader on the device, made once and
    shared by all the model's rows (MicroLens train is ~1.5 GB on the device)."""

    def __init__(self, params: dict, device):
        from fuxictr_mmctr.data.batches import BatchLoader
        from fuxictr_mmctr.pipeline.experiment import build_model, prepare

        feature_map, catalogue = prepare(params)
        self.params = params
        self.model = build_model(params, feature_map, catalogue)
        self.split = catalogue.load_split(params["train_data"])
        self.device_loader = BatchLoader(self.split, 128, shuffle=True, seed=0,
                                         max_len=params.get("max_len"), device=device,
                                         on_device=device.type == "cuda", trim_history=True)

    def loader(self, batch_size: int, trim_history: bool):
        """The device loader at ``batch_size``, trimming histories or not; the split on the
        device is shared, not copied. Only full batches (when the split has that many rows):
        a short last batch is a new shape, which a compiled row would compile while timed."""
        loader = copy.copy(self.device_loader)
        loader.batch_size = int(batch_size)
        loader.trim_history = self.device_loader.trim_history and bool(trim_history)
        loader.drop_last = self.split.num_rows >= batch_size
        return loader


def set_trainer(model, params: dict, precision: str, compile_on: bool, fast: bool) -> None:
    """Give ``model`` a fresh trainer with these switches (the previous one is dropped)."""
    from fuxictr_mmctr.training.trainer import Trainer, TrainerConfig

    model.trainer = None
    release_memory()
    if "torch._dynamo" in sys.modules:  # each row compiles afresh (and within the cache limit)
        torch._dynamo.reset()
    config = TrainerConfig.from_params({**params, "precision": precision, "compile": compile_on,
                                        "tf32": fast, "fused_optimizer": fast})
    model.trainer = Trainer(model, config, os.path.join(params["model_root"], "bench.model"),
                            model.device)


class HostLookupBatches:
    """The published way: each batch's item features gathered on the host, then copied.

    Wraps a host :class:`BatchLoader`; per batch, the tags and vectors of the target and of
    every history item are gathered with numpy from host copies of the item table and copied
    to the device together with the ids (no pinned memory).
    """

    def __init__(self, loader, item_table, device):
        self.loader, self.device = loader, device
        self.columns = {name: item_table.column(name).cpu().numpy() for name in item_table.names}

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            target = batch[contract.ITEM_ID].numpy()
            history = batch[contract.ITEM_SEQ].numpy()
            out = {name: tensor.to(self.device) for name, tensor in batch.items()}
            for name, column in self.columns.items():
                out[f"target_{name}"] = torch.from_numpy(column[target]).to(self.device)
                out[f"history_{name}"] = torch.from_numpy(column[history]).to(self.device)
            yield out


def endless(batches):
    """Batches forever (the loader restarted when it ends)."""
    while True:
        yield from batches


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# measuring


def count_flops(model, batch) -> float:
    """FLOPs of one eager training step (forward + backward) on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    counter = FlopCounterMode(display=False)
    with counter:  # eager (never compiled), float32: the FLOPs do not depend on the precision
        model(batch)["logit"].float().sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def compiled_graphs() -> int:
    """Graphs torch.compile has made so far in this process."""
    if "torch._dynamo" not in sys.modules:
        return 0
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def time_steps(model, batches, device, warmup_steps: int, seconds: float, max_steps: int):
    """``{"warmup_s", "steps", "seconds", "graphs_while_timed"}`` of training steps; the batch
    fetch is part of each step. A compiled model warms up until ``SETTLED_STEPS`` steps in a
    row compile nothing new (new history widths and group sizes compile on first sight)."""
    trainer = model.trainer
    start, step, settled = time.perf_counter(), 0, 0
    while step < warmup_steps or (trainer.compiling and settled < SETTLED_STEPS and step < 40):
        graphs = compiled_graphs()
        trainer.train_step(next(batches))
        settled = settled + 1 if compiled_graphs() == graphs else 0
        step += 1
    synchronize(device)
    warmup = time.perf_counter() - start
    graphs = compiled_graphs()
    steps, start = 0, time.perf_counter()
    while steps < max_steps and (steps < 2 or time.perf_counter() - start < seconds):
        trainer.train_step(next(batches))
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    loss = float(trainer.loss_meter.total)
    if not math.isfinite(loss):
        raise RuntimeError(f"training loss became {loss}")
    return {"warmup_s": warmup, "steps": steps, "seconds": elapsed,
            "graphs_while_timed": compiled_graphs() - graphs}


def measure_row(built: BuiltModel, variant, batch_size, device, args, flops_cache) -> dict:
    """One table row: the trainer of ``variant`` on ``built``'s model and loader, timed."""
    from fuxictr_mmctr.data.batches import BatchLoader
    from fuxictr_mmctr.layers.packing import apply_packed_history

    model, params = built.model, built.params
    baseline = variant == BASELINE
    precision, compile_on, packed = ("fp32", False, False) if baseline else VARIANTS[variant]
    apply_packed_history(model, packed)
    trims = packed and model.trims_history
    set_trainer(model, params, precision, compile_on, fast=not baseline)
    if baseline:
        host = BatchLoader(built.split, batch_size, shuffle=True, seed=0,
                           max_len=params.get("max_len"), device="cpu")
        batches = HostLookupBatches(host, model.item_encoder.item_table, device)
    else:
        batches = built.loader(batch_size, trims)
    row = {"model": type(model).__name__, "variant": variant, "batch_size": batch_size,
           "precision": precision, "compile": model.trainer.compiling, "packed": packed}
    stream = endless(batches)
    key = (row["model"], batch_size, packed)
    if key not in flops_cache:
        flops_cache[key] = count_flops(model, next(stream))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_steps(model, stream, device, args.warmup_steps, args.seconds, args.max_steps)
    steps, seconds = timing["steps"], timing["seconds"]
    row.update(timing, samples_per_s=steps * batch_size / seconds, step_ms=seconds / steps * 1e3,
               flops_per_step=flops_cache[key])
    row["tflops_per_s"] = row["flops_per_step"] * steps / seconds / 1e12
    row["mfu"] = model_flop_utilisation(row["flops_per_step"], steps / seconds, args.peak_flops)
    if device.type == "cuda":
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    del batches, stream
    return row


def median_row(kept: dict, new: dict) -> dict:
    """Merge a later round's measurement of a row: the row of the median rate is kept, with
    every round's samples/s in ``rounds``."""
    if "error" in kept or "error" in new:
        return kept if "error" in new else new
    rounds = kept.get("rounds", [kept["samples_per_s"]]) + [new["samples_per_s"]]
    candidates = [kept, new]
    middle = sorted(rounds)[(len(rounds) - 1) // 2]
    chosen = min(candidates, key=lambda row: abs(row["samples_per_s"] - middle))
    steps_per_s = middle / chosen["batch_size"]
    return {**chosen, "samples_per_s": middle, "step_ms": 1e3 / steps_per_s,
            "tflops_per_s": chosen["flops_per_step"] * steps_per_s / 1e12,
            "mfu": (chosen["mfu"] * middle / chosen["samples_per_s"]
                    if chosen.get("mfu") is not None else None),
            "rounds": rounds}


def bf16_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of the device called ``device_name``; ``None``: unknown."""
    return next((peak for fragment, peak in BF16_PEAK if fragment in device_name), None)


def bf16_peak(device, override_tflops) -> float | None:
    """``--peak-tflops`` if given, else the table's peak of ``device`` (``None`` on a CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    return bf16_peak_flops(torch.cuda.get_device_name(device))


def model_flop_utilisation(flops_per_step: float, steps_per_s: float,
                           peak_flops: float | None) -> float | None:
    """Achieved FLOP/s (``flops_per_step * steps_per_s``) over ``peak_flops``; ``None`` when
    the peak is unknown (a CPU)."""
    if not peak_flops:
        return None
    return flops_per_step * steps_per_s / peak_flops


def first_line(error: BaseException) -> str:
    """``"TypeName: first non-empty line of the message"`` (a row's error cell)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def row_or_error(measure, row: dict) -> dict:
    """``measure()``'s row; if it raises, ``row`` with ``"error"``: the error's first line (the
    traceback goes to stderr). ``KeyboardInterrupt`` and ``SystemExit`` still stop the run."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - a row's failure is that row's result
        traceback.print_exc()
        return {**row, "error": first_line(error)}


def is_compiled(variant: str) -> bool:
    return variant != BASELINE and VARIANTS[variant][1]


def row_order(models, variants, batch_sizes, baseline: bool, rounds: int = 1) -> list[tuple]:
    """``(model, variant, batch size)`` in the order they run: every eager row of every model
    (each model's baseline first), then the compiled rows; with ``rounds > 1`` each part is
    repeated that often, interleaved."""
    rows = [(model, variant, batch) for model in models
            for variant, batch in ([(BASELINE, 128)] if baseline else [])
            + [(variant, batch) for batch in batch_sizes for variant in variants]]
    eager = [key for key in rows if not is_compiled(key[1])]
    compiled = [key for key in rows if is_compiled(key[1])]
    return eager * rounds + compiled * rounds


# ---------------------------------------------------------------------------------------------
# report


def machine(device) -> dict:
    from fuxictr_mmctr.machine import cpu_model

    cpu = cpu_model()
    info = {"device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                       else f"CPU: {cpu}, {os.cpu_count()} cores"),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["device_memory_gb"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def markdown(report) -> str:
    peak = report["bf16_peak_tflops"]
    lines = [
        f"# Training throughput ({'smoke run, CPU' if report['smoke'] else 'GPU'})",
        "",
        f"Device: **{report['machine']['device']}** (torch {report['machine']['torch']}, "
        f"CUDA {report['machine']['cuda']}); dense bf16 peak used for MFU: "
        f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown (n/a)'}; "
        f"{report['machine']['cores']} CPU cores ({report['machine']['torch_threads']} torch "
        f"threads, load average {report['machine']['load_average_at_start']} at the start); "
        f"{report['total_s']:.0f} s in all.",
        f"Data: `{report['dataset']}` (synthetic); models at their "
        f"`<Model>_MicroLens{SCALES[report['scale']][0]}` configuration. "
        f"`python benchmarks/gpu_throughput.py {' '.join(report['argv'])}`".rstrip() + ".",
        "",
        "| model | variant | batch | samples/s | MFU | step ms | peak memory GB | TFLOP/s | "
        "GFLOP/step | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "error" in row:
            error = row["error"].replace("|", "\\|")
            lines.append(f"| {row['model']} | {row['variant']} | {row['batch_size']} | "
                         f"{error} | | | | | | |")
            continue
        memory = f"{row['peak_memory_gb']:.2f}" if "peak_memory_gb" in row else "n/a"
        mfu = f"{row['mfu']:.2%}" if row.get("mfu") is not None else "n/a"
        late = "*" if row.get("graphs_while_timed") else ""
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['batch_size']} | "
            f"{row['samples_per_s']:,.0f}{late} | {mfu} | {row['step_ms']:.1f} | {memory} | "
            f"{row['tflops_per_s']:.3f} | {row['flops_per_step'] / 1e9:.2f} | "
            f"{row['warmup_s']:.1f} |")
    lines += ["", "Rows without `+packed` run unpacked (`packed_history: False`); the rows "
              "are in the order they ran: every eager row first, the compiled rows last. MFU: "
              "model FLOP utilisation, the achieved FLOP/s over the dense bf16 peak (n/a on a "
              "CPU). FLOPs are "
              "counted on one eager step of the row's own model, so a packed row counts only "
              "the work it does. An error's first line stands in the samples/s column. "
              "The warm-up column includes torch.compile's compilation (a "
              "compiled row warms up until 3 steps in a row compile nothing new). "
              "The baseline gathers item features on the host per batch (numpy, a lower bound "
              "on the challenge collator's pandas cost). * torch.compile made new graphs while "
              "this row was timed (a shape first seen then): its rate is a lower bound."
              + (f" Each rate is the median of {report['rounds']} interleaved rounds."
                 if report.get("rounds", 1) > 1 else "")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    device = (torch.device("cuda", args.gpu) if torch.cuda.is_available() and args.gpu >= 0
              else torch.device("cpu"))
    smoke = device.type != "cuda"
    batch_sizes = [int(b) for b in (args.batch_sizes or ("128,1024" if smoke
                                                          else "128,1024,8192")).split(",")]
    args.seconds = args.seconds or (1.5 if smoke else 3.0)
    args.scale = args.scale or ("tiny" if smoke else "paper")
    variants = (args.variants.split(",") if args.variants
                else list(SMOKE_VARIANTS if smoke else GPU_VARIANTS))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    started = time.perf_counter()
    report = {"machine": machine(device), "smoke": smoke, "scale": args.scale,
              "rounds": args.rounds,
              "dataset": SCALES[args.scale][1], "argv": sys.argv[1:] if argv is None
              else list(argv), "bf16_peak_tflops": (bf16_peak(device, args.peak_tflops) or 0)
              / 1e12 or None, "rows": []}
    print(f"device: {report['machine']['device']}", flush=True)
    args.peak_flops = bf16_peak(device, args.peak_tflops)
    models = [m for m in args.models.split(",") if m]
    check_expids(models, args.scale)
    built, flops_cache, index = {}, {}, {}
    with tempfile.TemporaryDirectory() as model_root:
        for key in row_order(models, variants, batch_sizes, not args.no_baseline, args.rounds):
            name, variant, batch_size = key
            row = {"model": name, "variant": variant, "batch_size": batch_size}
            if args.budget_s and time.perf_counter() - started > args.budget_s:
                row["error"] = "skipped: time budget"
            else:
                row = row_or_error(lambda: measure_row(
                    built_model(built, name, args, smoke, model_root, device), variant,
                    batch_size, device, args, flops_cache), row)
                release_memory()
            if key not in index:
                index[key] = len(report["rows"])
                report["rows"].append(row)
            else:  # a later round: keep the median row, list every round's rate
                report["rows"][index[key]] = row = median_row(report["rows"][index[key]], row)
            report["total_s"] = time.perf_counter() - started
            write_report(report, args.out_dir)  # after every row: a cut-off run keeps them
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in row.items()}), flush=True)
        built.clear()
        release_memory()
    report["total_s"] = time.perf_counter() - started
    print(f"wrote {write_report(report, args.out_dir)}.{{md,json}} in {report['total_s']:.0f} s")


def check_expids(models, scale: str) -> None:
    """A model without its ``<Model>_MicroLens<scale suffix>`` expid stops the run at once,
    with one ``error:`` line (before any data is generated or any row is timed)."""
    from fuxictr_mmctr.errors import UserError
    from fuxictr_mmctr.pipeline import config_check

    for name in models:
        try:
            config_check.load_params(CONFIG_DIR, f"{name}_MicroLens{SCALES[scale][0]}", -1)
        except UserError as error:
            raise SystemExit(f"error: --models {name}: {error}") from None


def built_model(built: dict, name: str, args, smoke: bool, model_root: str, device) -> BuiltModel:
    """``name``'s :class:`BuiltModel`, made on its first row. If making it fails, that row and
    every later row of the model fail with the same error (it is not tried again)."""
    if name not in built:
        try:
            params = experiment_params(name, args.scale, -1 if smoke else args.gpu, model_root)
            built[name] = BuiltModel(params, device)
        except Exception as error:
            built[name] = error
    if isinstance(built[name], Exception):
        raise built[name]
    return built[name]


def write_report(report: dict, out_dir: str) -> str:
    """Write the ``.md`` and ``.json`` files; returns their path without the extension."""
    stem = os.path.join(out_dir, "gpu_throughput_cpu_smoke" if report["smoke"]
                        else "gpu_throughput")
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(f"{stem}.json", json.dumps(report, indent=1, default=float) + "\n")
    write_text_atomic(f"{stem}.md", markdown(report))
    return stem


if __name__ == "__main__":
    main()
