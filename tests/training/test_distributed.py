"""torchrun: gradient averaging is exact, and 2 CPU processes train like one with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vaelab.distributed import Placement, average_gradients, gather
from vaelab.runio import read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_worker(rank: int, world_size: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        inputs = torch.arange(24.0).reshape(8, 3) / 10
        placement = Placement(torch.device("cpu"), rank, world_size)
        layer(inputs[rank::world_size]).square().mean().backward()  # this process's shard of the batch
        average_gradients(list(layer.parameters()), placement)
        results[rank] = (layer.weight.grad.clone(), gather(torch.tensor([float(rank)] * (rank + 1)), placement))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.gradients
def test_averaged_shard_gradients_equal_the_full_batch_gradient():
    results = mp.Manager().dict()
    mp.spawn(_shard_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    layer((torch.arange(24.0).reshape(8, 3) / 10)).square().mean().backward()
    for rank in (0, 1):
        gradient, gathered = results[rank]
        torch.testing.assert_close(gradient, layer.weight.grad)
        assert gathered.tolist() == [0.0, 1.0, 1.0]  # lengths 1 and 2, in rank order


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("model", [[], ["--architecture", "ladder", "--latent-dim", "8,4,2"]], ids=["mlp", "ladder"])
def test_two_processes_train_like_one(tmp_path, model):
    common = ["--dataset", "digits", "--epochs", "4", "--hidden", "64", "--eval-every", "4", "--eval-k", "50", "--no-progress", "--device", "cpu", *model]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_OFFLINE": "1"}
    single = subprocess.run([sys.executable, "-m", "vaelab", "train", *common, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaelab"]
    double = subprocess.run([*torchrun, "train", *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr

    one, two = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "two"))
    assert [(r["kind"], r["epoch"], r["split"]) for r in one] == [(r["kind"], r["epoch"], r["split"]) for r in two]
    assert [r["step"] for r in one] == [r["step"] for r in two]  # same global batch: same number of steps
    for a, b in zip(one, two):
        if a["kind"] == "eval":
            assert a["num_images"] == b["num_images"]  # the sharded evaluation covers every image once
            # Different latent noise, same data and global batch: the bounds agree within 1 nat
            # (about 5 standard errors of the 300-image test mean on digits).
            assert abs(a["bound"] - b["bound"]) < 1.0, (a, b)
    environment = (tmp_path / "two" / "environment.json").read_text()
    assert '"processes": 2' in environment
    # rank 0 alone wrote files: the run's four, its lock file (kept, unlocked, for the next writer) and
    # the per-image bounds of each evaluation row, gathered from both processes
    names = {p.name for p in (tmp_path / "two").iterdir()}
    per_image = {name for name in names if name.startswith("bounds-")}
    assert names - per_image == {".vaelab.lock", "checkpoint.pt", "config.json", "environment.json", "metrics.jsonl"}
    assert per_image == {row["bounds_file"] for row in read_metrics(tmp_path / "two" / "metrics.jsonl") if row["kind"] == "eval"}
