"""Can this machine run ``benchmarks/gpu_check.sh``? Checked in seconds, before minutes are spent.

Imports the package and every dependency the check needs, prints what it found (Python, torch,
CUDA, the device and its dense bf16 peak, the backends) and ends with one line:

    preflight: PASS
    preflight: FAIL missing: fuxictr (No module named 'fuxictr'); CUDA (torch sees no GPU)

and exit status 1 when anything is missing. ``--device cpu`` checks the CPU rehearsal instead
(gloo instead of nccl, a C compiler instead of triton for torch.compile).

``ray``: FuxiCTR 2.3.10 imports it when its layers are imported (its own parquet pipeline, which
this package never uses), and its wheel is too large to carry to a machine without network.
``--ray-stand-in DIR`` writes an import-only stand-in into ``DIR`` when ``ray`` cannot be
imported (:mod:`ray_stand_in`: any use of it raises); the script puts ``DIR`` last on
``PYTHONPATH``, so a real ``ray`` always wins, and the line naming ``ray`` says which one it is.

    python benchmarks/gpu_preflight.py [--device cuda|cpu] [--ray-stand-in DIR]
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sys

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)

#: (import name, distribution, exact version or None): what the check imports.
REQUIREMENTS = (
    ("torch", "torch", None),
    ("numpy", "numpy", None),
    ("pandas", "pandas", None),
    ("pyarrow", "pyarrow", None),
    ("polars", "polars", None),
    ("h5py", "h5py", None),
    ("sklearn", "scikit-learn", None),
    ("yaml", "pyyaml", None),
    ("tqdm", "tqdm", None),
    ("matplotlib", "matplotlib", None),
    ("pytest", "pytest", None),
    ("fuxictr", "fuxictr", "2.3.10"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--ray-stand-in", default=None, metavar="DIR",
                        help="write ray's import-only stand-in here when ray is absent")
    return parser.parse_args(argv)


def first_line(error: BaseException) -> str:
    """``"TypeName: first non-empty line of the message"``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def check_imports(requirements=REQUIREMENTS) -> tuple[list[str], list[str]]:
    """``(found, missing)``: ``"name version"`` lines and ``"name (why)"`` entries."""
    found, missing = [], []
    for module_name, distribution, wanted in requirements:
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001 - an import can fail in any way
            missing.append(f"{distribution} ({first_line(error)})")
            continue
        version = getattr(module, "__version__", "?")
        if wanted is not None and version != wanted:
            missing.append(f"{distribution}=={wanted} (found {version})")
        else:
            found.append(f"{distribution} {version}")
    return found, missing


def check_ray(stand_in_dir: str | None) -> tuple[str | None, str | None]:
    """``(found line, missing entry)`` for ``ray`` (real, or the stand-in written now)."""
    try:
        import ray
    except ImportError as error:
        if stand_in_dir is None:
            return None, f"ray ({first_line(error)}; or pass --ray-stand-in DIR)"
        sys.path.insert(0, BENCHMARKS)
        import ray_stand_in

        ray_stand_in.write(stand_in_dir)
        importlib.invalidate_caches()
        if stand_in_dir not in sys.path:
            sys.path.append(stand_in_dir)
        import ray
    if getattr(ray, "IS_STAND_IN", False):
        return f"ray: import-only stand-in in {os.path.dirname(os.path.dirname(ray.__file__))}", None
    return f"ray {ray.__version__}", None


def check_device(device: str) -> tuple[list[str], list[str]]:
    """The device, its bf16 peak and the distributed and compile backends it needs."""
    import torch
    import torch.distributed as dist

    found = [f"python {platform.python_version()} ({sys.executable})",
             f"CUDA runtime of torch: {torch.version.cuda}"]
    missing = []
    if not dist.is_available():
        missing.append("torch.distributed (not built into this torch)")
    if device == "cpu":
        from fuxictr_mmctr.machine import cpu_model  # standard library only

        found.append(f"device: CPU, {cpu_model()}, {os.cpu_count()} cores (rehearsal)")
        if dist.is_available() and not dist.is_gloo_available():
            missing.append("gloo (torch.distributed has no gloo backend)")
        compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            missing.append("a C compiler (torch.compile on the CPU needs cc, gcc or clang)")
        return found, missing
    if not torch.cuda.is_available():
        return found, missing + ["CUDA (torch sees no GPU)"]
    name = torch.cuda.get_device_name(0)
    try:
        sys.path.insert(0, BENCHMARKS)
        from gpu_throughput import bf16_peak_flops
        peak = bf16_peak_flops(name)
    except Exception as error:  # noqa: BLE001 - the package check below names the cause
        missing.append(f"benchmarks/gpu_throughput.py ({first_line(error)})")
        peak = None
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    found.append(f"device: {name}, {memory:.0f} GiB, capability "
                 f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}, dense bf16 peak "
                 f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'not in the table (MFU n/a)'}")
    if not torch.cuda.is_bf16_supported():
        missing.append("bf16 (the device does not support it)")
    if dist.is_available() and not dist.is_nccl_available():
        missing.append("nccl (torch.distributed has no nccl backend)")
    try:
        import triton
        found.append(f"triton {triton.__version__}")
    except ImportError as error:
        missing.append(f"triton ({first_line(error)}; torch.compile needs it on a GPU)")
    return found, missing


def check_package() -> tuple[list[str], list[str]]:
    """This checkout's ``fuxictr_mmctr`` with its models (which import FuxiCTR's layers)."""
    try:
        import fuxictr_mmctr
        import fuxictr_mmctr.models  # noqa: F401
        import fuxictr_mmctr.pipeline.experiment  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return [], [f"fuxictr_mmctr ({first_line(error)})"]
    where = os.path.dirname(os.path.dirname(os.path.abspath(fuxictr_mmctr.__file__)))
    if os.path.realpath(where) != os.path.realpath(REPO):
        return [], [f"fuxictr_mmctr from this checkout (imported from {where}; put {REPO} "
                    f"first on PYTHONPATH)"]
    return [f"fuxictr_mmctr from {where}"], []


def preflight(device: str, stand_in_dir: str | None) -> list[str]:
    """Print what was found; return what is missing (empty: ready)."""
    ray_found, ray_missing = check_ray(stand_in_dir)  # first: importing fuxictr imports ray
    found, missing = check_imports()
    found += [ray_found] if ray_found else []
    missing += [ray_missing] if ray_missing else []
    if not any(entry.startswith("torch (") for entry in missing):
        device_found, device_missing = check_device(device)
        found, missing = device_found + found, missing + device_missing
    if not missing:
        package_found, missing = check_package()
        found += package_found
    for line in found:
        print(f"preflight: {line}")
    return missing


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = preflight(args.device, args.ray_stand_in)
    print("preflight: PASS" if not missing else f"preflight: FAIL missing: {'; '.join(missing)}",
          flush=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
