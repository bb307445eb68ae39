"""The run directory (issues 14, 29 and 30): one writer at a time (a lock that follows no link),
nothing erases a run's history, nothing removed that vaelab did not write, one file registry,
atomic figures, and impossible options refused before anything is written."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
from conftest import ENV, TINY, one_line_error, run_cli, snapshot

from vaelab import runio
from vaelab.errors import RunError
from vaelab.evaluation.exact import exact_file
from vaelab.evaluation.per_image import bounds_file_name
from vaelab.runio import (
    DirectoryLockedError,
    directory_lock,
    is_registry_name,
    is_vaelab_temporary,
    read_metrics,
    write_figure_atomic,
)
from vaelab.studies.bounds.figures import FIGURES
from vaelab.studies.compare.report import FIGURE_NAMES


# Locks --------------------------------------------------------------------------------------------


HOLD = "import sys, time; from vaelab.runio import directory_lock\nwith directory_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(600)"


def hold_lock(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
@pytest.mark.e2e
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


@pytest.mark.slow
@pytest.mark.e2e
def test_two_train_resume_processes_at_once_one_is_refused_and_the_metrics_are_not_doubled(tmp_path):
    # the first trains until it is stopped, so the second meets its lock however slowly it starts
    # (with a short run, a loaded machine let the first finish before the second asked)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vaelab", "train", *TINY, "--epochs", "100000", "--out", str(out), "--resume"]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / runio.LOCK_FILE).exists() or not (out / runio.LOCK_FILE).read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    first.send_signal(signal.SIGINT)  # it finishes its epoch's checkpoint and stops
    assert first.wait(timeout=300) == 128 + signal.SIGINT, first.stderr.read()
    assert second.returncode == 1
    assert second.stderr.strip() == f"vaelab train: error: {out}: in use by process {first.pid} (train); wait for it to finish, or stop it first"
    epochs = [row["epoch"] for row in read_metrics(out / "metrics.jsonl") if row["kind"] == "train"]
    assert epochs == list(range(1, len(epochs) + 1)), epochs  # each epoch once


@pytest.mark.e2e
def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with directory_lock(tmp_path, "outer"):
        with directory_lock(tmp_path, "inner"):
            pass
        assert (tmp_path / runio.LOCK_FILE).read_text() == f"process {os.getpid()} (outer)\n"


@pytest.mark.parametrize("make, fragment", [
    (lambda lock, outside: lock.symlink_to(outside), "symbolic link"),
    (lambda lock, outside: lock.symlink_to(outside.parent / "created-through-the-link"), "symbolic link"),  # dangling: O_CREAT would create it
    (lambda lock, outside: os.link(outside, lock), "hard link"),
    (lambda lock, outside: os.mkfifo(lock), "not a regular file"),
])
@pytest.mark.e2e
def test_a_lock_file_that_is_a_link_or_no_regular_file_is_refused_and_nothing_outside_changes(run, tmp_path, make, fragment):
    outside = tmp_path / "precious.txt"
    outside.write_text("someone's data\n")
    (run / runio.LOCK_FILE).unlink()
    make(run / runio.LOCK_FILE, outside)
    before = snapshot(run)
    status, _, stderr = run_cli("evaluate", run, "--k", "2", "--images", "5", "--threads", "1")
    one_line_error(status, stderr)
    assert runio.LOCK_FILE in stderr and fragment in stderr
    assert outside.read_text() == "someone's data\n"
    assert not (tmp_path / "created-through-the-link").exists()
    assert snapshot(run) == before


@pytest.mark.e2e
def test_a_reproduce_on_a_directory_in_use_is_refused_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "reproduction"
    out.mkdir()
    with open(out / runio.LOCK_FILE, "w") as held:  # another open file: flock conflicts even within this process
        held.write("process 1 (reproduce)\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, _, stderr = run_cli("reproduce", "burda2015-1layer", "--budget", "smoke", "--out", out, "--no-progress", "--threads", "1")
    one_line_error(status, stderr)
    assert "in use by process 1 (reproduce)" in stderr
    assert [path.name for path in out.iterdir()] == [runio.LOCK_FILE]


@pytest.mark.e2e
def test_a_directory_without_vaelabs_environment_file_is_not_a_run(run):
    """environment.json marks a run: a directory holding only config.json is not vaelab's."""
    (run / runio.ENVIRONMENT_FILE).unlink()
    assert runio.run_files(run) == [] and not runio.is_vaelab_run(run)
    with pytest.raises(RunError, match="not a vaelab run"):
        runio.check_run_directory(run, resume=False, overwrite=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_overwrite_keeps_a_users_own_figures_and_files(tmp_path):
    study = tmp_path / "study"
    arguments = ["compare", "--algorithms", "aevb", *TINY, "--epochs", "1", "--curve-images", "5", "--out", study]
    status, _, stderr = run_cli(*arguments)
    assert status == 0, stderr
    mine = {study / "figures" / "my-plot.png": b"png", study / "notes.txt": b"mine", study / ".x.abcdefgh.tmp": b"mine"}
    for path, data in mine.items():
        path.write_bytes(data)
    status, _, stderr = run_cli(*arguments, "--overwrite")
    assert status == 0, stderr
    assert all(path.read_bytes() == data for path, data in mine.items())


@pytest.mark.parametrize("content, fragment", [
    ({"notes.txt": "mine"}, "not a vaelab reproduction"),
    ({"reproduce.json": "{not json"}, "reproduce.json: unreadable"),
    ({"reproduce.json": "[1]"}, "not a vaelab reproduction file"),
])
@pytest.mark.e2e
def test_reproduce_into_a_folder_that_is_not_its_reproduction_is_refused_in_one_line(tmp_path, content, fragment):
    for name, text in content.items():
        (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    status, _, stderr = run_cli("reproduce", "burda2015-1layer", "--budget", "smoke", "--out", tmp_path, "--no-progress", "--threads", "1")
    one_line_error(status, stderr)
    assert fragment in stderr and snapshot(tmp_path) == before
    assert runio.LOCK_FILE not in {path.name for path in tmp_path.iterdir()}


@pytest.mark.e2e
def test_overwrite_removes_the_runs_tensorboard_events_but_not_through_a_link(run, tmp_path):
    events = run / runio.TENSORBOARD_DIR / "events.out.tfevents.1.host"
    events.parent.mkdir()
    events.write_bytes(b"old run")
    with runio.open_run_directory(run, "train", resume=False, overwrite=True):
        pass
    assert not events.exists() and not (run / runio.CHECKPOINT_FILE).exists()
    elsewhere = tmp_path / "their-logs"
    elsewhere.mkdir()
    (elsewhere / "events.out.tfevents.2.host").write_bytes(b"theirs")
    (run / runio.ENVIRONMENT_FILE).write_text(json.dumps({"packages": {"vaelab": "0"}}))
    events.parent.rmdir()
    events.parent.symlink_to(elsewhere)
    with runio.open_run_directory(run, "train", resume=False, overwrite=True):
        pass
    assert (elsewhere / "events.out.tfevents.2.host").read_bytes() == b"theirs"


# Nothing erases a run's history ---------------------------------------------------------------


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


# Only what vaelab wrote is removed ---------------------------------------------------------------


@pytest.mark.e2e
def test_overwrite_of_a_folder_that_is_not_a_run_deletes_nothing_and_does_not_recommend_overwrite(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"data": "my own", "model": {}, "train": {}}))
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "kind": "train"}\n')
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    for options in (["--overwrite"], ["--resume"], []):
        status, _, stderr = run_cli("train", *TINY, "--epochs", "1", "--out", folder, *options)
        one_line_error(status, stderr)
        assert "--overwrite" not in stderr and snapshot(folder) == before
        if "--resume" not in options:  # --resume reads config.json as the run's config first, and refuses it
            assert "not a vaelab run" in stderr
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "metrics.jsonl", "notes.txt"]  # not even a lock file


@pytest.mark.e2e
def test_only_temporaries_of_vaelab_writes_of_its_own_files_are_removed(tmp_path):
    seen = []

    class Figure:  # records the temporary file that an atomic write draws into
        def savefig(self, file, format):
            seen.extend(name for name in os.listdir(tmp_path) if name.endswith(".tmp"))

    write_figure_atomic(tmp_path / "training.png", Figure())
    assert len(seen) == 1 and is_vaelab_temporary(seen[0])
    kept = [".x.abcdefgh.tmp", ".config.json.abcdefgh.tmp", ".notes.txt.vaelab-abcdefgh.tmp"]  # a user's names
    ours = [".metrics.jsonl.vaelab-abcdefgh.tmp", ".checkpoint.pt.vaelab-a1_b2c3d.tmp"]
    for name in kept + ours:
        (tmp_path / name).write_text("x")
    with directory_lock(tmp_path, "test"):
        pass
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")) == sorted(kept)


# The registry ------------------------------------------------------------------------------------


@pytest.mark.contract
def test_every_file_a_command_writes_is_in_the_registry(tmp_path):
    names = [
        runio.CONFIG_FILE, runio.ENVIRONMENT_FILE, runio.METRICS_FILE, runio.CHECKPOINT_FILE, runio.FINAL_FILE, runio.BOUND_CURVE_FILE,
        bounds_file_name("eval", "test", 3, "k1000"), bounds_file_name("evaluate", "test", 3, "ais-T100-M16"), exact_file(tmp_path, "test").name,
        runio.STUDY_FILE, runio.REPORT_FILE, runio.REPRODUCE_FILE, runio.REPORT_MD, runio.REPORT_JSON, runio.BOUNDS_RESULTS_FILE,
        runio.BOUNDS_PAGE_FILE, *(f"{name}.{suffix}" for name in (*FIGURE_NAMES, *FIGURES.values()) for suffix in ("png", "pdf")),
    ]
    assert all(is_registry_name(name) for name in names)
    assert not any(is_registry_name(name) for name in ("notes.txt", "data.npz", "model.pt"))


@pytest.mark.e2e
def test_train_overwrite_removes_the_final_measurement_so_reproduce_measures_the_new_model(run):
    """reproduce skips its final L_k when final.json was saved for the checkpoint's epoch: a run
    replaced by `train --overwrite` for as many epochs must not keep the old model's bound."""
    final = run / runio.FINAL_FILE
    final.write_text(json.dumps({"epoch": 1, "bound": -1.0, "bound_stderr": 0.0, "k": 5, "num_images": 5, "eval_seconds": 0.0}))
    status, _, stderr = run_cli("train", *TINY, "--epochs", "1", "--seed", "1", "--out", run, "--overwrite")
    assert status == 0, stderr
    assert not final.exists()
    assert json.loads((run / runio.CONFIG_FILE).read_text())["seed"] == 1


@pytest.mark.algebra
def test_checkpoints_are_read_against_one_schema(run):
    checkpoint = runio.load_checkpoint(run / runio.CHECKPOINT_FILE, runio.CHECKPOINT_KEYS)
    assert set(checkpoint) == runio.CHECKPOINT_KEYS  # what training writes is what resume requires
    assert runio.MODEL_CHECKPOINT_KEYS <= runio.CHECKPOINT_KEYS


# Atomic figures -------------------------------------------------------------------------------


# Rebuild the report, but SIGKILL the process in the middle of writing its third figure file.
KILL_DURING_REPORT = """
import os, signal, sys
import matplotlib.figure
from vaelab.cli import main
calls = []
def savefig(self, target, **kwargs):
    calls.append(target)
    if len(calls) == 3:
        file = open(target, "wb") if isinstance(target, (str, os.PathLike)) else target  # a path: how savefig was called before
        file.write(b"half a figure")
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, target, **kwargs)
original, matplotlib.figure.Figure.savefig = matplotlib.figure.Figure.savefig, savefig
main(["report", sys.argv[1]])
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_a_kill_during_report_leaves_every_previous_figure_whole_and_the_next_start_cleans_up(study):
    before = snapshot(study)
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_REPORT, str(study)], env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = [path for path in study.rglob("*.tmp")]
    assert len(leftovers) == 1 and leftovers[0].parent.name == "figures"
    after = {name: data for name, data in snapshot(study).items() if not name.endswith(".tmp")}
    rewritten = {"figures/training.png", "figures/training.pdf"}  # whole new versions, written before the kill
    assert {name: data for name, data in after.items() if name not in rewritten} == {name: data for name, data in before.items() if name not in rewritten}
    assert after.keys() == before.keys() and after["figures/samples.png"] == before["figures/samples.png"]  # the one being written
    assert after["figures/training.pdf"].rstrip().endswith(b"%%EOF")
    matplotlib.image.imread(study / "figures" / "training.png")
    status, _, stderr = run_cli("report", study)
    assert status == 0, stderr
    assert not list(study.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.e2e
def test_report_of_a_study_being_written_is_refused(study):
    holder = hold_lock(study)
    try:
        status, _, stderr = run_cli("report", study)
        one_line_error(status, stderr)
        assert f"in use by process {holder.pid}" in stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# Sizes, seeds and splits refused before anything is allocated or written ----------------------


@pytest.mark.parametrize("options, fragment", [
    (["--hidden", "1000000000"], "GiB of memory"),
    (["--eval-k", "100000000"], "GiB of memory"),
    (["--batch-size", "10000000", "--num-samples", "100000"], "GiB of memory"),
    (["--threads", "1000000"], "per core"),
    (["--seed", str(2**64)], "2^63 - 1"),
    (["--seed", str(2**63)], "2^63 - 1"),
    (["--eval-splits", "valid"], "has no valid split"),
])
@pytest.mark.e2e
def test_impossible_options_are_refused_before_anything_is_written(tmp_path, options, fragment):
    for command in ("train", "compare"):
        arguments = [command, "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "out", *options]
        if command == "compare":
            arguments[1:1] = ["--algorithms", "aevb"]
            if "--eval-splits" in options:
                arguments[-1] = "test,valid"
        status, _, stderr = run_cli(*arguments)
        one_line_error(status, stderr)
        assert fragment in stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_evaluate_refuses_a_k_beyond_memory_before_evaluating(run):
    before = snapshot(run)
    status, _, stderr = run_cli("evaluate", run, "--k", "10000000000")
    one_line_error(status, stderr)
    assert "GiB of memory" in stderr and snapshot(run) == before


@pytest.mark.e2e
def test_the_memory_estimate_passes_the_papers_models():
    from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
    from vaelab.preflight import memory_needed

    iwae_two_layers = ExperimentConfig(
        data=DataConfig(dataset="mnist"), model=ModelConfig(hidden=(200, 200), latent_dim=(100, 50), upper_hidden=(100, 100)),
        train=TrainConfig(algorithm="iwae", num_samples=50, eval_k=5000, kl="monte-carlo"),
    )
    assert memory_needed(iwae_two_layers, 784) < 8 * 2**30  # L_5000 in batches of 100 images (500,000 rows): runs on a 16 GB machine
    assert memory_needed(ExperimentConfig(model=ModelConfig(hidden=(10**9,))), 784) > 10**14  # over 700 TiB


@pytest.mark.parametrize("name, make", [
    ("metrics.jsonl", lambda path: path.mkdir()),
    ("metrics.jsonl", lambda path: path.symlink_to("/dev/null")),
    ("metrics.jsonl", lambda path: path.symlink_to(path)),
    ("checkpoint.pt", lambda path: path.mkdir()),
])
@pytest.mark.e2e
def test_a_run_file_that_is_not_a_plain_file_is_refused_before_anything_changes(run, name, make):
    (run / name).unlink()
    make(run / name)
    before = snapshot(run)
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--epochs", "3", "--no-progress", "--threads", "1")
    one_line_error(status, stderr)
    assert name in stderr and snapshot(run) == before


@pytest.mark.e2e
def test_a_report_page_that_is_a_directory_is_refused_before_any_figure_is_replaced(study):
    (study / "report.html").unlink()
    (study / "report.html").mkdir()
    before = snapshot(study)
    status, _, stderr = run_cli("report", study)
    one_line_error(status, stderr)
    assert "report.html: is a directory" in stderr and snapshot(study) == before


@pytest.mark.e2e
def test_evaluate_and_report_of_a_directory_that_is_not_a_run_write_nothing_there(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for command in (["evaluate", tmp_path], ["evaluate", tmp_path, "--exact"], ["report", tmp_path]):
        status, _, stderr = run_cli(*command)
        one_line_error(status, stderr)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
