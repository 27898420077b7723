"""benchmarks/gpu_throughput.py and gpu_preflight.py: MFU, row errors, row order, preflight."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return load_script("gpu_throughput")


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12),
                                       ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
                                       ("NVIDIA GH200 480GB", 989e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12),
                                       ("NVIDIA L4", 121e12), ("Some New Accelerator", None)])
def test_bf16_peak_by_device_name(throughput, name, peak):
    assert throughput.bf16_peak_flops(name) == peak


def test_mfu_is_achieved_flops_over_the_peak(throughput):
    # 2 TFLOP per step at 50 steps/s is 100 TFLOP/s: about a tenth of an H100's 989
    assert throughput.model_flop_utilisation(2e12, 50.0, 989e12) == pytest.approx(100 / 989)
    assert throughput.model_flop_utilisation(2e12, 50.0, None) is None  # a CPU: n/a


def test_flops_of_one_training_step_are_counted(throughput):
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8, 3))

        def forward(self, batch):
            return {"logit": batch @ self.weight}

    # forward (4, 8) @ (8, 3): 2 * 4 * 8 * 3 = 192; backward: the weight's gradient, as many
    assert throughput.count_flops(Linear(), torch.ones(4, 8)) == 384


def test_a_failing_row_records_its_first_line_and_the_run_goes_on(throughput, capsys):
    def fails():
        raise RuntimeError("CUDA error: an illegal memory access\nmore detail")

    row = throughput.row_or_error(fails, {"model": "DIN", "variant": "fp32", "batch_size": 128})
    assert row == {"model": "DIN", "variant": "fp32", "batch_size": 128,
                   "error": "RuntimeError: CUDA error: an illegal memory access"}
    assert "Traceback" in capsys.readouterr().err
    assert throughput.row_or_error(lambda: {"samples_per_s": 1.0}, {}) == {"samples_per_s": 1.0}

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        throughput.row_or_error(interrupted, {})
    table = throughput.markdown({"bf16_peak_tflops": None, "smoke": True, "scale": "tiny",
                                 "dataset": "d", "argv": [], "total_s": 1.0, "rows": [row],
                                 "machine": {"device": "CPU", "torch": "t", "cuda": None,
                                             "cores": 2, "torch_threads": 1,
                                             "load_average_at_start": 1.0}})
    assert "| DIN | fp32 | 128 | RuntimeError: CUDA error: an illegal memory access |" in table


def test_every_eager_row_runs_before_any_compiled_row(throughput):
    order = throughput.row_order(["A", "B"], ["fp32", "bf16+compile", "bf16+packed"],
                                 [128, 1024], baseline=True)
    variants = [variant for _, variant, _ in order]
    assert variants[:10] == [throughput.BASELINE, "fp32", "bf16+packed", "fp32",
                             "bf16+packed"] * 2  # model A's eager rows, then model B's
    assert [key for key in order if key[1] == "bf16+compile"] == order[-4:]
    assert len(order) == 2 * (1 + 3 * 2)
    twice = throughput.row_order(["A"], ["fp32", "bf16+compile"], [128], False, rounds=2)
    assert twice == [("A", "fp32", 128)] * 2 + [("A", "bf16+compile", 128)] * 2


def test_preflight_names_what_is_missing_in_one_entry_each():
    preflight = load_script("gpu_preflight")
    found, missing = preflight.check_imports((("torch", "torch", None),
                                              ("no_such_module_xyz", "no-such", None),
                                              ("pytest", "pytest", "0.0.1")))
    assert found == [f"torch {torch.__version__}"]
    assert missing == ["no-such (ModuleNotFoundError: No module named 'no_such_module_xyz')",
                       f"pytest==0.0.1 (found {pytest.__version__})"]


def test_the_ray_stand_in_imports_as_fuxictr_needs_and_refuses_any_use(tmp_path):
    stand_in = load_script("ray_stand_in")
    stand_in.write(str(tmp_path))
    code = ("import ray\n"
            "from ray.data import SaveMode, TaskPoolStrategy\n"
            "from ray.data.datasource.filename_provider import FilenameProvider\n"
            "class Names(FilenameProvider): pass\n"
            "assert ray.IS_STAND_IN\n"
            "try:\n    ray.init()\nexcept RuntimeError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ray is an import-only stand-in on this machine")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure on a machine without GPU")
def test_gpu_check_stops_after_a_failed_preflight_with_its_summary(tmp_path):
    """Without a GPU, the GPU check's preflight names CUDA as missing and the script stops
    (exit 2) before any other step, leaving summary.md and the logs."""
    out = tmp_path / "out"
    result = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu_check.sh"), str(out)],
                            capture_output=True, text=True, timeout=240,
                            env={**os.environ, "GPU_CHECK_DEVICE": "cuda"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "preflight: FAIL missing: CUDA (torch sees no GPU)" in result.stdout
    summary = (out / "summary.md").read_text()
    assert "| preflight | FAIL |" in summary and "| data |" not in summary
    assert sorted(path.name for path in out.iterdir()) == ["logs.tar.gz", "summary.md"]


def test_a_model_that_cannot_be_built_fails_its_rows_without_building_again(throughput,
                                                                           monkeypatch):
    attempts = []

    def unbuildable(*args):
        attempts.append(args)
        raise ValueError("no such expid")

    monkeypatch.setattr(throughput, "experiment_params", unbuildable)
    built, args = {}, type("Args", (), {"scale": "tiny", "gpu": 0})()
    rows = [throughput.row_or_error(
        lambda: throughput.built_model(built, "DIN", args, True, "/tmp", torch.device("cpu")),
        {"model": "DIN"}) for _ in range(3)]
    assert [row["error"] for row in rows] == ["ValueError: no such expid"] * 3
    assert len(attempts) == 1


def test_a_model_without_its_expid_stops_the_benchmark_in_one_line(throughput):
    throughput.check_expids(["DIN"], "tiny")
    with pytest.raises(SystemExit, match=r"^error: --models NoSuchModel: expid "
                                         r"NoSuchModel_MicroLens_tiny not found"):
        throughput.check_expids(["DIN", "NoSuchModel"], "tiny")
