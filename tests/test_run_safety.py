"""Nothing lost, nothing hidden (issue 14): locks, run history, signals, atomic figures, and every
file read back validated into one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelab import runio
from vaelab.cli import main
from vaelab.errors import RunError
from vaelab.runio import DirectoryLockedError, directory_lock, read_metrics

TINY = ["--dataset", "digits", "--hidden", "16", "--eval-k", "10", "--eval-train-size", "100", "--no-progress", "--threads", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def run_cli(*args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of the command line called in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse's usage errors
            status = exit.code
    return status, stdout.getvalue(), stderr.getvalue()


def one_line_error(status: int, stderr: str) -> None:
    assert status != 0
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (but the lock file, whose holder note changes) and its bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file() and path.name != runio.LOCK_FILE}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-epoch run on digits (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    status, _, stderr = run_cli("train", *TINY, "--epochs", "2", "--out", out)
    assert status == 0, stderr
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# 1. Locks ----------------------------------------------------------------------------------------

HOLD = "import sys, time; from vaelab.runio import directory_lock\nwith directory_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(600)"


def hold_lock(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_stale_lock(run):
    holder = hold_lock(run)
    try:
        before = snapshot(run)
        for command in (["train", "--out", run, "--resume", "--threads", "1"], ["evaluate", run, "--k", "2", "--images", "5", "--threads", "1"]):
            status, _, stderr = run_cli(*command)
            one_line_error(status, stderr)
            assert f"in use by process {holder.pid} (holder)" in stderr
        with pytest.raises(DirectoryLockedError, match=str(holder.pid)):
            with directory_lock(run, "test"):
                pass
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    status, stdout, stderr = run_cli("evaluate", run, "--k", "2", "--images", "5", "--threads", "1")  # the kernel released it
    assert status == 0, stderr


def test_two_train_resume_processes_at_once_one_is_refused_and_the_metrics_are_not_doubled(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vaelab", "train", *TINY, "--epochs", "6", "--out", str(out), "--resume"]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / runio.LOCK_FILE).exists() or not (out / runio.LOCK_FILE).read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 1
    assert second.stderr.strip() == f"vaelab train: error: {out}: in use by process {first.pid} (train); wait for it to finish, or stop it first"
    rows = read_metrics(out / "metrics.jsonl")
    assert [row["epoch"] for row in rows if row["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with directory_lock(tmp_path, "outer"):
        with directory_lock(tmp_path, "inner"):
            pass
        assert (tmp_path / runio.LOCK_FILE).read_text() == f"process {os.getpid()} (outer)\n"


# 2. Nothing erases a run's history ---------------------------------------------------------------


def test_a_run_without_its_checkpoint_is_neither_overwritten_nor_restarted(run):
    status, _, stderr = run_cli("evaluate", run, "--k", "2", "--images", "5", "--threads", "1")
    assert status == 0, stderr
    (run / "checkpoint.pt").unlink()
    before = snapshot(run)
    for extra in ([], ["--resume"], ["--lr", "0.01"], ["--lr", "0.01", "--resume"]):
        status, _, stderr = run_cli("train", *TINY, "--epochs", "2", "--out", run, *extra)
        one_line_error(status, stderr)
        assert "--overwrite" in stderr
        assert snapshot(run) == before
    status, _, stderr = run_cli("train", *TINY, "--epochs", "1", "--lr", "0.01", "--out", run, "--overwrite")
    assert status == 0, stderr
    rows = read_metrics(run / "metrics.jsonl")
    assert {row["epoch"] for row in rows} == {1} and not any(row["kind"] == "evaluate" for row in rows)
    assert json.loads((run / "config.json").read_text())["train"]["learning_rate"] == 0.01


def test_a_non_empty_directory_that_is_not_a_run_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    for command in (["train", *TINY, "--epochs", "1", "--out", tmp_path], ["train", *TINY, "--epochs", "1", "--out", tmp_path, "--overwrite"],
                    ["compare", "--algorithms", "aevb", *TINY, "--epochs", "1", "--out", tmp_path],
                    ["compare", "--algorithms", "aevb", *TINY, "--epochs", "1", "--out", tmp_path, "--overwrite"]):
        status, _, stderr = run_cli(*command)
        one_line_error(status, stderr)
        assert "not empty and not a vaelab" in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "notes.txt"]  # not even a lock file


def test_resume_alone_continues_from_the_recorded_config_and_other_options_must_agree(run):
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--no-progress", "--threads", "1")
    assert status == 0, stderr  # already finished: nothing to do
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--epochs", "3", "--no-progress", "--threads", "1")
    assert status == 0, stderr
    assert [row["epoch"] for row in read_metrics(run / "metrics.jsonl") if row["kind"] == "train"] == [1, 2, 3]
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--lr", "0.01", "--threads", "1")
    one_line_error(status, stderr)
    assert "differs in train.learning_rate" in stderr
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--overwrite")
    one_line_error(status, stderr)


def test_a_run_killed_in_its_first_epoch_resumes_with_the_same_config_only(tmp_path, trained):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "environment.json"):  # what a run holds before its first checkpoint
        shutil.copy(trained / name, run / name)
    status, _, stderr = run_cli("train", *TINY, "--epochs", "2", "--lr", "0.01", "--out", run, "--resume")
    one_line_error(status, stderr)
    assert "differs in train.learning_rate" in stderr
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--no-progress", "--threads", "1")
    assert status == 0, stderr
