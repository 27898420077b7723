"""More than one machine: two torchrun "nodes" on this machine (c10d rendezvous, gloo) train
exactly as two processes on one node do."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.builders import working_folder

TINY = "Transformer_DCN_MicroLens_tiny"


def result_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("result expid=")]
    assert len(lines) == 1, stdout[-2000:]
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_as_two_processes_on_one_node(tmp_path, tiny_dataset):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_node = working_folder(tmp_path / "one_node", tiny_dataset, scripts=["run_expid.py"])
    single = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "run_expid.py", "--expid", TINY, "--gpu", "-1"],
        cwd=one_node, capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-2000:]

    # The two "nodes" share this folder, as machines share a network file system.
    two_nodes = working_folder(tmp_path / "two_nodes", tiny_dataset, scripts=["run_expid.py"])
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes",
         "run_expid.py", "--expid", TINY, "--gpu", "-1"],
        cwd=two_nodes, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    # Exactly one process (global rank 0, on whichever node) prints the result line.
    printed = [result_line(out) for out, _ in outputs if "result expid=" in out]
    assert len(printed) == 1
    assert printed[0] == result_line(single.stdout)
