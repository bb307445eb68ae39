"""Crash safety and bad input: SIGKILL at events of the run, SIGINT, full disks, hostile configs."""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ENV, REPO_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab import runio
from vaelab.config import ExperimentConfig
from vaelab.errors import ConfigError, RunError
from vaelab.estimators.bounds import importance_weighted_bound
from vaelab.objectives import log_mean_exp
from vaelab.runio import append_metrics, read_metrics

EPOCHS = 40
RUN = ["train", "--dataset", "digits", "--epochs", str(EPOCHS), "--hidden", "64", "--eval-every", "4", "--eval-k", "100", "--no-progress", "--device", "cpu"]
# One thread: the same matmul blocking in every process, so runs are bitwise comparable.


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaelab", *RUN, "--out", str(out), *extra], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


def final_state(run: Path):
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def checkpoint_epoch(run: Path) -> int:
    try:
        return torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    except Exception:  # absent, or being replaced at this instant
        return -1


# Where each kill lands: an event of the run (see tests/kill_at_event.py), each kind in turn, the
# n-th after the attempt's first checkpoint drawn with a fixed seed. No clock decides anything, so
# the schedule, and whether all ten kills land before the run ends, is the same on every machine.
KILL_COUNTS = {"step": (1, 20), "evaluation": (1, 8), "fsync": (1, 4)}


def kill_schedule(kills: int, seed: int = 2024) -> list[tuple[str, int]]:
    draws = random.Random(seed)
    kinds = [kind for _, kind in zip(range(kills), itertools.cycle(KILL_COUNTS))]
    return [(kind, draws.randint(*KILL_COUNTS[kind])) for kind in kinds]


def start_killed_at(out: Path, kind: str, count: int) -> subprocess.Popen:
    hook = REPO_ROOT / "tests" / "kill_at_event.py"
    command = [sys.executable, str(hook), kind, str(count), *RUN, "--out", str(out), "--resume"]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_at_ten_events_then_resume_equals_uninterrupted_run(tmp_path):
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    run = tmp_path / "killed"
    landed = []
    for kind, count in kill_schedule(10):
        before = checkpoint_epoch(run)
        process = start_killed_at(run, kind, count)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode in (0, -signal.SIGKILL), stderr.decode()
        if process.returncode == 0:
            break  # finished before this kill: nothing left to interrupt
        epoch = checkpoint_epoch(run)
        assert epoch > before, (kind, count)  # every attempt moved the run on
        if kind == "fsync":  # rows of an epoch whose checkpoint was not saved: resume must drop them
            assert max(row["epoch"] for row in read_metrics(run / "metrics.jsonl")) > epoch, (kind, count)
        landed.append((kind, count, epoch))
    finisher = start(run, "--resume")
    assert finisher.wait(timeout=300) == 0, finisher.stderr.read()
    assert len(landed) == 10, f"only {len(landed)} kills landed: {landed}"
    assert comparable(read_metrics(run / "metrics.jsonl")) == comparable(read_metrics(tmp_path / "reference" / "metrics.jsonl"))
    reference_state, resumed_state = final_state(tmp_path / "reference"), final_state(run)
    for name, tensor in reference_state.items():
        assert torch.equal(tensor, resumed_state[name]), name


@pytest.mark.slow
@pytest.mark.e2e
def test_sigint_stops_after_a_checkpoint_and_resumes(tmp_path):
    process = start(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    while not checkpoint.exists():  # the event: the first epoch is saved (however long it took)
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and "--resume" in stderr
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert max(row["epoch"] for row in rows) == epoch  # the epoch in progress was finished and saved
    assert epoch < EPOCHS
    assert start(tmp_path / "run", "--resume").wait(timeout=300) == 0


@pytest.mark.e2e
def test_full_disk_during_checkpoint_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runio.save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runio.os, "fsync", full_disk)
    with pytest.raises(RunError, match="No space left on device.*previous version is intact"):
        runio.save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


@pytest.mark.e2e
def test_unwritable_directory_is_reported_and_nothing_is_lost(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")

    def permission_denied(**kwargs):  # what a read-only directory answers (root would not be refused)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(runio.tempfile, "mkstemp", permission_denied)
    with pytest.raises(RunError, match="config.json: cannot write .Permission denied"):
        runio.write_text_atomic(tmp_path / "config.json", "new")
    assert (tmp_path / "config.json").read_text() == "{}"


@pytest.mark.algebra
def test_a_partial_metrics_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"epoch": 1, "kind": "train"})
    with open(path, "ab") as file:
        file.write(b'{"epoch": 2, "bou')  # a crash mid-write
    assert read_metrics(path) == [{"epoch": 1, "kind": "train"}]
    append_metrics(path, {"epoch": 2, "kind": "train"})
    assert read_metrics(path) == [{"epoch": 1, "kind": "train"}, {"epoch": 2, "kind": "train"}]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
known_keys = st.sampled_from(["dataset", "binarization", "latent_dim", "hidden", "activation", "algorithm", "epochs", "learning_rate", "eval_splits", "eval_k", "num_samples", "kl", "seed"])


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(["data", "model", "train", "seed"]), st.dictionaries(known_keys, json_values, max_size=4) | json_values, max_size=4),
    )
)
@pytest.mark.algebra
def test_config_loader_answers_any_json_with_a_config_or_one_line(values):
    try:
        config = ExperimentConfig.from_dict(values)
    except ConfigError as error:
        assert "\n" not in str(error) and str(error)
    else:
        assert ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.algebra
def test_extreme_log_weights_give_finite_bounds():
    log_weights = torch.tensor([[-1e4, 0.0], [-2e4, -1e30], [0.0, -1e30]], dtype=torch.float32)
    values = log_mean_exp(log_weights, 0)
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values, torch.log(torch.tensor([1 / 3, 1 / 3])))


@pytest.mark.algebra
def test_peaked_weights_and_extreme_logits_give_finite_bounds():
    from vaelab.builders import build_model
    from vaelab.config import ModelConfig

    model = build_model(ModelConfig(latent_dim=2, hidden=(8,)), 6, "bernoulli")
    with torch.no_grad():
        model.generative.logits.weight.mul_(1e3)  # logits of order 1e3: probabilities of exactly 0 and 1 in fp32
        model.recognition.raw_scale.bias.fill_(-30.0)  # q as narrow as MIN_SCALE: very peaked weights
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]])
    assert torch.isfinite(importance_weighted_bound(model, x, 1000, torch.Generator().manual_seed(0))).all()


@pytest.mark.algebra
def test_atomic_files_get_the_usual_permissions(tmp_path):
    runio.write_text_atomic(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
