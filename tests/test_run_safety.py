"""Nothing lost, nothing hidden (issue 14): locks, run history, signals, atomic figures, and every
file read back validated into one line."""

from __future__ import annotations

import io
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
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import ENV, TINY, one_line_error, run_cli, snapshot

from vaelab import runio
from vaelab.errors import RunError
from vaelab.runio import DirectoryLockedError, directory_lock, read_metrics

pytestmark = pytest.mark.e2e


# 1. Locks ----------------------------------------------------------------------------------------

HOLD = "import sys, time; from vaelab.runio import directory_lock\nwith directory_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(600)"


def hold_lock(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
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


# 3. Signals --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_training_at_a_checkpoint_with_one_line_and_exit_143(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "vaelab", "train", *TINY, "--epochs", "500", "--out", str(out)],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    stderr = process.stderr.read()
    assert stderr.strip().splitlines() == ["vaelab train: terminated; the last checkpoint is intact (continue with --resume)"]
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert max(row["epoch"] for row in read_metrics(out / "metrics.jsonl")) == epoch < 500


@pytest.mark.parametrize("command, module, function, advice", [
    ("evaluate", "vaelab.evaluation.evaluate", "evaluate_run", "nothing to resume"),
    ("compare", "vaelab.studies.compare.run", "compare", "run the same command again"),
])
def test_ctrl_c_advice_fits_the_command(run, monkeypatch, command, module, function, advice):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{module}.{function}", interrupted)
    arguments = ["evaluate", run] if command == "evaluate" else ["compare", "--algorithms", "aevb", *TINY, "--out", run.parent / "study"]
    status, _, stderr = run_cli(*arguments)
    assert status == 130
    assert advice in stderr and "--resume" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_raw_pickle_is_refused_without_torch_warnings(tmp_path, capfd):
    import pickle

    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"epoch": 1, "model": {}}))
    with pytest.raises(RunError, match="checkpoint.pt: unreadable checkpoint"):
        runio.load_checkpoint(tmp_path / "checkpoint.pt")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# 4. Atomic figures -------------------------------------------------------------------------------


# Rebuild the report, but SIGKILL the process in the middle of writing its third figure file.
KILL_DURING_REPORT = """
import os, signal, sys
import matplotlib.figure
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
def test_report_of_a_study_being_written_is_refused(study):
    holder = hold_lock(study)
    try:
        status, _, stderr = run_cli("report", study)
        one_line_error(status, stderr)
        assert f"in use by process {holder.pid}" in stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# 6. Non-finite parameters ------------------------------------------------------------------------


def test_a_nan_weight_is_refused_before_any_evaluation_naming_the_tensor(run):
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(name for name in checkpoint["model"] if name.endswith("weight"))
    checkpoint["model"][name].view(-1)[3] = float("nan")
    torch.save(checkpoint, run / "checkpoint.pt")
    before = snapshot(run)
    for command in (["evaluate", run, "--k", "2", "--images", "5"], ["train", "--out", run, "--resume", "--epochs", "3"]):
        status, _, stderr = run_cli(*command, "--threads", "1")
        one_line_error(status, stderr)
        assert f"parameter {name} holds NaN" in stderr
    assert snapshot(run) == before


# 5. Every file read back is validated into one line ----------------------------------------------


def rewrite_checkpoint(run: Path, change) -> None:
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save(change(checkpoint), run / "checkpoint.pt")


def other_shape(checkpoint):
    checkpoint["model"] = {name: torch.zeros(*(size + 1 for size in tensor.shape)) for name, tensor in checkpoint["model"].items()}
    return checkpoint


CHECKPOINT_FAULTS = {
    "another model shape": other_shape,
    "no model entry": lambda checkpoint: {key: value for key, value in checkpoint.items() if key != "model"},
    "a bare tensor": lambda checkpoint: torch.zeros(3),
    "epoch as a string": lambda checkpoint: {**checkpoint, "epoch": "2"},
    "model of lists": lambda checkpoint: {**checkpoint, "model": {"w": [1.0]}},
    "invalid embedded config": lambda checkpoint: {**checkpoint, "config": {**checkpoint["config"], "seed": -1}},
    "no noise generators": lambda checkpoint: {**checkpoint, "noise_generators": []},
    "optimizer of another run": lambda checkpoint: {**checkpoint, "optimizer": {"state": {}, "param_groups": []}},
}


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
def test_a_bad_checkpoint_gets_one_line_naming_it_from_evaluate_and_resume(run, fault):
    rewrite_checkpoint(run, CHECKPOINT_FAULTS[fault])
    before = snapshot(run)
    commands = [["train", "--out", run, "--resume", "--epochs", "3", "--no-progress"]]
    if fault not in ("invalid embedded config", "no noise generators", "optimizer of another run"):  # evaluate reads neither
        commands.append(["evaluate", run, "--k", "2", "--images", "5"])
    for command in commands:
        status, _, stderr = run_cli(*command, "--threads", "1")
        one_line_error(status, stderr)
        assert "checkpoint.pt" in stderr
    assert snapshot(run) == before


@pytest.mark.parametrize("row", ['[1, 2]', '{"epoch": "1", "kind": "train"}', '{"kind": "train"}', '{"epoch": 1, "kind": 5}', '"text"', '{"epoch": 1, "kind": "eval", "bound": "x"}'])
def test_foreign_metrics_rows_get_one_line_naming_the_file_and_line(run, row):
    with open(run / "metrics.jsonl", "a") as file:
        file.write(row + "\n")
    before = snapshot(run)
    for command in (["train", "--out", run, "--resume", "--epochs", "3", "--no-progress"], ["evaluate", run, "--k", "2", "--images", "5"]):
        status, _, stderr = run_cli(*command, "--threads", "1")
        one_line_error(status, stderr)
        assert "metrics.jsonl:" in stderr and "not a" in stderr
    assert snapshot(run) == before


STUDY_FAULTS = {
    "bound curve of the wrong shape": ("aevb/bound_curve.json", '{"epoch": 1, "k": [1], "bound": [0.0]}'),
    "bound curve a list": ("aevb/bound_curve.json", "[]"),
    "compare.json of the wrong shape": ("compare.json", '{"algorithms": [], "config": {}}'),
    "compare.json a string": ("compare.json", '"study"'),
    "compare.json with a bad algorithm list": ("compare.json", '{"algorithms": 5, "config": {}, "curve_images": null}'),
    "empty metrics": ("aevb/metrics.jsonl", ""),
    "metrics of another epoch": ("aevb/metrics.jsonl", '{"epoch": 7, "kind": "train", "split": "train", "bound": 1, "wall_seconds": 1, "epoch_seconds": 1}\n'),
}


@pytest.mark.parametrize("fault", STUDY_FAULTS)
def test_a_bad_study_file_gets_one_line_from_report(study, fault):
    name, text = STUDY_FAULTS[fault]
    (study / name).write_text(text)
    before = snapshot(study)
    status, _, stderr = run_cli("report", study)
    one_line_error(status, stderr)
    assert Path(name).name in stderr
    assert snapshot(study) == before


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then answers ENOSPC, as a full disk does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def fileno(self):
        return self.file.fileno()

    def close(self):
        self.file.close()
        super().close()


@pytest.mark.parametrize("what", ["checkpoint", "figure"])
def test_a_full_disk_while_torch_or_matplotlib_writes_gives_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, what):
    from matplotlib.figure import Figure

    path = tmp_path / ("checkpoint.pt" if what == "checkpoint" else "figure.png")
    figure = Figure()
    figure.add_subplot().plot(range(100))

    def write():
        if what == "checkpoint":
            runio.save_checkpoint(path, {"epoch": 1, "model": {"w": torch.randn(100_000)}})
        else:
            runio.write_figure_atomic(path, figure, dpi=100)

    write()
    before = path.read_bytes()
    original = os.fdopen
    monkeypatch.setattr(runio.os, "fdopen", lambda descriptor, mode: FullDisk(original(descriptor, mode), 1000))
    with pytest.raises(RunError, match="No space left on device.*previous version is intact") as error:
        write()
    assert "\n" not in str(error.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# 7. Downloads are capped at the expected size ----------------------------------------------------


class EndlessResponse:
    """An HTTP answer that never ends (and announces no length), counting the bytes handed out."""

    headers: dict[str, str] = {}

    def __init__(self):
        self.handed_out = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size=-1):
        size = 1 << 20 if size is None or size < 0 else size
        self.handed_out += size
        return b"x" * size


def test_a_download_larger_than_expected_is_stopped_at_the_expected_size(tmp_path, monkeypatch):
    from vaelab.data import download
    from vaelab.errors import DataError

    response = EndlessResponse()
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: response)
    with pytest.raises(DataError, match="more than the expected 10000 bytes"):
        download.download_file(["http://mirror/file"], tmp_path / "file", "0" * 64, size=10_000)
    assert response.handed_out <= 10_001
    assert list(tmp_path.iterdir()) == []


def test_every_dataset_file_has_its_expected_size_and_the_shared_copies_match_it(shared_data_dir):
    from vaelab.data import datasets

    for name, spec in datasets.REGISTRY.items():
        for file in spec.files:
            assert file.size is not None, (name, file.name)
            local = shared_data_dir / spec.folder / file.name
            if local.is_file():
                assert local.stat().st_size == file.size, local


# 8. Any corruption of any file: one line, non-zero, nothing else changed ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["epoch", "kind", "model", "k", "bound", "split", "config", "algorithms"]) | st.text(max_size=5), children, max_size=4),
    max_leaves=8,
)
corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("replace with JSON"), json_values),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("empty"), st.none()),
)


def corrupt(path: Path, corruption) -> None:
    kind, value = corruption
    data = path.read_bytes()
    if kind == "truncate":
        data = data[: int(value * len(data))]
    elif kind == "flip":
        data = bytearray(data)
        for where, mask in value:
            data[int(where * len(data))] ^= mask
        data = bytes(data)
    elif kind == "replace with JSON":
        data = (json.dumps(value) + "\n").encode()
    elif kind == "append":
        data += value
    else:
        data = b""
    path.write_bytes(data)


def check_fails_cleanly_or_succeeds(directory: Path, command: list) -> bool:
    """Run ``command``: it either succeeds, or fails in one line with nothing on disk changed. True if it failed."""
    before = snapshot(directory)
    status, _, stderr = run_cli(*command)
    if status == 0:
        return False
    one_line_error(status, stderr)
    assert status == 1
    assert snapshot(directory) == before, command
    return True


CORRUPTION_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@CORRUPTION_SETTINGS
@given(name=st.sampled_from(["checkpoint.pt", "config.json", "metrics.jsonl"]), corruption=corruptions)
@pytest.mark.slow
def test_a_corrupted_run_file_gives_evaluate_and_resume_one_line_and_changes_nothing(trained, tmp_path_factory, name, corruption):
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(trained, run)
    corrupt(run / name, corruption)
    check_fails_cleanly_or_succeeds(run, ["train", "--out", run, "--resume", "--no-progress", "--threads", "1"])
    check_fails_cleanly_or_succeeds(run, ["evaluate", run, "--k", "2", "--images", "5", "--threads", "1"])


@CORRUPTION_SETTINGS
@given(name=st.sampled_from(["compare.json", "aevb/checkpoint.pt", "aevb/config.json", "aevb/metrics.jsonl", "aevb/bound_curve.json"]), corruption=corruptions)
@pytest.mark.slow
def test_a_corrupted_study_file_gives_report_one_line_and_changes_nothing(finished_study, tmp_path_factory, name, corruption):
    study = tmp_path_factory.mktemp("corrupt") / "study"
    shutil.copytree(finished_study, study)
    corrupt(study / name, corruption)
    check_fails_cleanly_or_succeeds(study, ["report", study])


# 9. Sizes, seeds and splits refused before anything is allocated or written ----------------------


@pytest.mark.parametrize("options, fragment", [
    (["--hidden", "1000000000"], "GiB of memory"),
    (["--eval-k", "100000000"], "GiB of memory"),
    (["--batch-size", "10000000", "--num-samples", "100000"], "GiB of memory"),
    (["--threads", "1000000"], "per core"),
    (["--seed", str(2**64)], "2^63 - 1"),
    (["--seed", str(2**63)], "2^63 - 1"),
    (["--eval-splits", "valid"], "has no valid split"),
])
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


def test_evaluate_refuses_a_k_beyond_memory_before_evaluating(run):
    before = snapshot(run)
    status, _, stderr = run_cli("evaluate", run, "--k", "10000000000")
    one_line_error(status, stderr)
    assert "GiB of memory" in stderr and snapshot(run) == before


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
def test_a_run_file_that_is_not_a_plain_file_is_refused_before_anything_changes(run, name, make):
    (run / name).unlink()
    make(run / name)
    before = snapshot(run)
    status, _, stderr = run_cli("train", "--out", run, "--resume", "--epochs", "3", "--no-progress", "--threads", "1")
    one_line_error(status, stderr)
    assert name in stderr and snapshot(run) == before


def test_a_report_page_that_is_a_directory_is_refused_before_any_figure_is_replaced(study):
    (study / "report.html").unlink()
    (study / "report.html").mkdir()
    before = snapshot(study)
    status, _, stderr = run_cli("report", study)
    one_line_error(status, stderr)
    assert "report.html: is a directory" in stderr and snapshot(study) == before


def test_evaluate_and_report_of_a_directory_that_is_not_a_run_write_nothing_there(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for command in (["evaluate", tmp_path], ["evaluate", tmp_path, "--exact"], ["report", tmp_path]):
        status, _, stderr = run_cli(*command)
        one_line_error(status, stderr)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
