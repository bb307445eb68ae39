"""The run-directory room (issues 29 and 30): a lock that follows no link, nothing removed that
vaelab did not write, one file registry (final.json included) and reproduce's lock."""

from __future__ import annotations

import fcntl
import json
import os

import pytest
from conftest import TINY, one_line_error, run_cli, snapshot

from vaelab import runio
from vaelab.errors import RunError
from vaelab.evaluation.exact import exact_file
from vaelab.evaluation.per_image import bounds_file_name
from vaelab.runio import directory_lock, is_registry_name, is_vaelab_temporary, write_figure_atomic
from vaelab.studies.compare.report import FIGURE_NAMES
from vaelab.studies.bounds.figures import FIGURES


# The lock ----------------------------------------------------------------------------------------


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


# reproduce's lock --------------------------------------------------------------------------------


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
