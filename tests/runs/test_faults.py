"""Faults during a run (issue 14): SIGKILL at events of the run then resume, SIGINT and SIGTERM,
full disks, non-finite parameters, hostile configs, and every file read back (bad, foreign or
corrupted) validated into one line with nothing else changed."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ENV, REPO_ROOT, TINY, one_line_error, run_cli, snapshot
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


# Signals --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
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
@pytest.mark.e2e
def test_ctrl_c_advice_fits_the_command(run, monkeypatch, command, module, function, advice):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{module}.{function}", interrupted)
    arguments = ["evaluate", run] if command == "evaluate" else ["compare", "--algorithms", "aevb", *TINY, "--out", run.parent / "study"]
    status, _, stderr = run_cli(*arguments)
    assert status == 130
    assert advice in stderr and "--resume" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.e2e
def test_a_raw_pickle_is_refused_without_torch_warnings(tmp_path, capfd):
    import pickle

    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"epoch": 1, "model": {}}))
    with pytest.raises(RunError, match="checkpoint.pt: unreadable checkpoint"):
        runio.load_checkpoint(tmp_path / "checkpoint.pt")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# Non-finite parameters ------------------------------------------------------------------------


@pytest.mark.e2e
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


# Every file read back is validated into one line ----------------------------------------------


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
@pytest.mark.e2e
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
@pytest.mark.e2e
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
@pytest.mark.e2e
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
@pytest.mark.e2e
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


# Any corruption of any file: one line, non-zero, nothing else changed ------------------------

file_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["epoch", "kind", "model", "k", "bound", "split", "config", "algorithms"]) | st.text(max_size=5), children, max_size=4),
    max_leaves=8,
)
corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("replace with JSON"), file_json_values),
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
@pytest.mark.e2e
def test_a_corrupted_run_file_gives_evaluate_and_resume_one_line_and_changes_nothing(trained, tmp_path_factory, name, corruption):
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(trained, run)
    corrupt(run / name, corruption)
    check_fails_cleanly_or_succeeds(run, ["train", "--out", run, "--resume", "--no-progress", "--threads", "1"])
    check_fails_cleanly_or_succeeds(run, ["evaluate", run, "--k", "2", "--images", "5", "--threads", "1"])


@CORRUPTION_SETTINGS
@given(name=st.sampled_from(["compare.json", "aevb/checkpoint.pt", "aevb/config.json", "aevb/metrics.jsonl", "aevb/bound_curve.json"]), corruption=corruptions)
@pytest.mark.slow
@pytest.mark.e2e
def test_a_corrupted_study_file_gives_report_one_line_and_changes_nothing(finished_study, tmp_path_factory, name, corruption):
    study = tmp_path_factory.mktemp("corrupt") / "study"
    shutil.copytree(finished_study, study)
    corrupt(study / name, corruption)
    check_fails_cleanly_or_succeeds(study, ["report", study])
