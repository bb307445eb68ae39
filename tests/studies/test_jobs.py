"""Jobs at once, one spawned process each (vaelab.jobs, ``compare --jobs``): each job runs with its
threads in its own process; a failure comes back by type after the others were stopped; an
interrupt reaches every job; a study trained at once equals the one trained one after the other."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import job_functions
import pytest
import torch
from conftest import REPO_ROOT

from vaelab import jobs, progress
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError, RunError
from vaelab.runio import read_metrics
from vaelab.studies.compare.run import compare
from vaelab.studies.compare.study import Study

TESTS = REPO_ROOT / "tests"  # job_functions.py: the jobs' module, imported by name


@pytest.mark.parametrize("count, given_jobs, given_threads, cpus, expected", [
    (2, None, None, 2, (2, 1)),   # the README's main command on a 2-core machine
    (2, None, None, 8, (2, 4)),   # the CPUs shared out
    (5, None, None, 2, (2, 1)),   # no more processes than CPUs
    (1, None, None, 8, (1, None)),  # one job: in this process, PyTorch's threads
    (3, 2, None, 8, (2, 4)),
    (2, 4, 3, 2, (2, 3)),         # never more processes than jobs; --threads as given
])
@pytest.mark.algebra
def test_processes_and_threads(monkeypatch, count, given_jobs, given_threads, cpus, expected):
    monkeypatch.setattr(jobs, "usable_cpus", lambda: cpus)
    assert jobs.processes_and_threads(count, given_jobs, given_threads) == expected


@pytest.mark.e2e
def test_every_job_runs_in_its_own_process_with_its_threads(tmp_path):
    paths = [str(tmp_path / f"job{index}.json") for index in range(3)]
    jobs.run_jobs(job_functions.record, [(path,) for path in paths], processes=2, threads=1)
    records = [json.loads(Path(path).read_text()) for path in paths]
    assert all(record["threads"] == 1 for record in records)
    assert os.getpid() not in {record["pid"] for record in records}
    assert len({record["pid"] for record in records}) == 3


@pytest.mark.parametrize("flushed", [False, True])
@pytest.mark.e2e
def test_a_job_computes_with_subnormals_as_its_parent_does(tmp_path, flushed):
    """The CLI flushes subnormals (machine.flushing_subnormals); its jobs must too, as --jobs 1 does in-process."""
    from vaelab.machine import flushing_subnormals

    path = str(tmp_path / "job.json")
    with flushing_subnormals() if flushed else contextlib.nullcontext():
        jobs.run_jobs(job_functions.record, [(path,)], processes=1, threads=1)
    assert json.loads(Path(path).read_text())["flushed"] is flushed


@pytest.mark.e2e
def test_the_jobs_bars_and_lines_are_drawn_by_the_parent(capfd, monkeypatch):
    monkeypatch.setattr(progress, "stderr_is_a_terminal", lambda: True)  # the parent draws bars on a terminal only
    jobs.run_jobs(job_functions.show_progress, [("first",), ("second",)], processes=2, threads=1)
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == ["first: half way", "second: half way"]
    assert "first:   0%" in err and "second:   0%" in err  # tqdm's bars, on this process's stderr


@pytest.mark.e2e
def test_a_failure_comes_back_by_type_after_the_other_jobs_were_stopped(tmp_path):
    waiter = str(tmp_path / "waiter")
    with pytest.raises(ConfigError, match="^no good$"):
        jobs.run_jobs(job_functions.refuse_or_wait, [(None, waiter), ("no good", waiter)], processes=2, threads=1)
    assert Path(waiter).read_text() == str(int(signal.SIGTERM))  # stopped as training stops: its epoch finished


@pytest.mark.e2e
def test_a_bug_in_a_job_is_raised_by_name(capfd):
    with pytest.raises(RuntimeError, match="ValueError: a bug"):
        jobs.run_jobs(job_functions.crash, [()], processes=1, threads=1)
    assert "Traceback" in capfd.readouterr().err  # the job's own traceback, for whoever debugs it


@pytest.mark.e2e
def test_an_interrupt_reaches_every_job_and_is_raised(tmp_path):
    waiters = [str(tmp_path / f"waiter{index}") for index in range(2)]

    def interrupt_once_both_wait():
        while not all(Path(waiter + ".ready").exists() for waiter in waiters):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_both_wait, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(job_functions.wait_for_a_stop, [(waiter,) for waiter in waiters], processes=2, threads=1)
    assert [Path(waiter).read_text() for waiter in waiters] == [str(int(signal.SIGINT))] * 2


@pytest.mark.e2e
def test_an_interrupt_while_the_parent_reads_an_outcome_reaches_the_running_jobs(tmp_path, monkeypatch):
    """Ctrl-C lands wherever the parent is, not only in its wait: here while it reads a finished job's
    outcome. The job still running must get it and stop as training does, not be killed."""
    waiter = str(tmp_path / "waiter")
    read_outcome = jobs._outcome

    def interrupted_while_reading(process, receiver):
        os.kill(os.getpid(), signal.SIGINT)
        return read_outcome(process, receiver)

    monkeypatch.setattr(jobs, "_outcome", interrupted_while_reading)
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(job_functions.stop_once_waited, [(waiter, False), (waiter, True)], processes=2, threads=1)
    assert Path(waiter).read_text() == str(int(signal.SIGINT))


@pytest.mark.e2e
def test_a_stop_that_reaches_a_job_while_it_starts_is_its_interrupt(tmp_path, monkeypatch, capfd):
    """Until a job is in its own process group, the terminal's Ctrl-C reaches it too: it must stop
    with a KeyboardInterrupt as its outcome, not die in its start-up with a traceback."""
    import multiprocessing.context

    start = multiprocessing.context.SpawnProcess.start

    def interrupted_start(process):
        start(process)
        os.kill(process.pid, signal.SIGINT)  # as the terminal's Ctrl-C to the foreground process group

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", interrupted_start)
    path = tmp_path / "job.json"
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(job_functions.record, [(str(path),)], processes=1, threads=1)
    assert not path.exists() and "Traceback" not in capfd.readouterr().err


TINY_STUDY = Study(("wake-sleep", "aevb"), ExperimentConfig(
    model=ModelConfig(hidden=(16,)), train=TrainConfig(epochs=2, eval_every=1, eval_k=10, eval_train_size=100)), curve_images=50)


@pytest.mark.e2e
def test_a_study_trained_at_once_equals_one_trained_one_after_the_other(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count in both: then the same bits
    try:
        one_after_the_other = compare(TINY_STUDY, tmp_path / "sequential", progress=False, jobs=1)
    finally:
        torch.set_num_threads(threads)
    at_once = compare(TINY_STUDY, tmp_path / "at-once", progress=False, jobs=2, threads=1)
    assert at_once.sentence == one_after_the_other.sentence
    for algorithm in TINY_STUDY.algorithms:
        rows = [read_metrics(tmp_path / study / algorithm / "metrics.jsonl") for study in ("sequential", "at-once")]
        assert [(row["kind"], row["split"], row["bound"]) for row in rows[0]] == [(row["kind"], row["split"], row["bound"]) for row in rows[1]]
        curves = [json.loads((tmp_path / study / algorithm / "bound_curve.json").read_text()) for study in ("sequential", "at-once")]
        assert curves[0] == curves[1]


@pytest.mark.e2e
def test_jobs_at_once_only_on_the_cpu(monkeypatch):
    assert jobs.processes_and_threads(2, None, None, "cpu")[0] == min(2, jobs.usable_cpus())
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: one after the other, and --jobs 2 is refused
    assert jobs.processes_and_threads(2, None, None, "cpu") == (1, None)
    with pytest.raises(ConfigError, match="--jobs 2: jobs run at once on the CPU only"):
        jobs.processes_and_threads(2, 2, None, "cpu")


EPOCHS = 200  # a few seconds of training each: the interrupt lands mid-run


@pytest.mark.slow
@pytest.mark.e2e
def test_ctrl_c_stops_every_algorithm_at_a_checkpoint_and_the_study_continues(tmp_path):
    """The terminal's Ctrl-C (SIGINT to the process group): each algorithm's epoch finished and saved,
    one line, exit 130; the same command continues both runs to the end."""
    out = tmp_path / "study"
    command = [sys.executable, "-m", "vaelab", "compare", "--hidden", "16", "--epochs", str(EPOCHS), "--eval-every", str(EPOCHS), "--eval-k", "5",
               "--curve-images", "20", "--no-progress", "--jobs", "2", "--threads", "1", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not all((out / algorithm / "checkpoint.pt").exists() for algorithm in TINY_STUDY.algorithms):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)  # as the terminal does: to the whole foreground group
    assert process.wait(timeout=120) == 130
    stderr = process.stderr.read()
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("vaelab compare: interrupted; ")
    for algorithm in TINY_STUDY.algorithms:
        epoch = torch.load(out / algorithm / "checkpoint.pt", weights_only=True)["epoch"]
        assert max(row["epoch"] for row in read_metrics(out / algorithm / "metrics.jsonl")) == epoch < EPOCHS
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    for algorithm in TINY_STUDY.algorithms:
        assert torch.load(out / algorithm / "checkpoint.pt", weights_only=True)["epoch"] == EPOCHS


@pytest.mark.e2e
def test_a_killed_job_is_named_in_one_line(tmp_path):
    with pytest.raises(RunError, match="^a job's process was killed by signal 9 before it finished; its last checkpoint is intact$"):
        jobs.run_jobs(job_functions.die, [()], processes=1, threads=1)


@pytest.mark.e2e
def test_a_job_stopped_on_its_own_stops_the_study(tmp_path):
    waiter = str(tmp_path / "waiter")
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(job_functions.stop_once_waited, [(waiter, False), (waiter, True)], processes=2, threads=1)
    assert Path(waiter).read_text() == str(int(signal.SIGTERM))  # the other job was stopped at its checkpoint


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)")
@pytest.mark.e2e
def test_a_job_stops_and_exits_when_its_parent_is_killed(tmp_path):
    """SIGTERM from the kernel stops the job at its checkpoint; then it exits although nobody reads
    the progress it still sends (more than a pipe holds)."""
    waiter = tmp_path / "waiter"
    parent = subprocess.Popen([sys.executable, "-c", "import job_functions, sys; from vaelab import jobs; "
                               "jobs.run_jobs(job_functions.wait_then_chatter, [(sys.argv[1],)], processes=1, threads=1)", str(waiter)],
                              cwd=TESTS, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # two interpreters load torch first: slow on a loaded machine
    while not Path(str(waiter) + ".ready").exists():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.01)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60  # what is tested starts here: the orphan stops and exits
    while not waiter.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    received, pid = json.loads(waiter.read_text())
    assert received == int(signal.SIGTERM)
    status = Path(f"/proc/{pid}/status")
    while status.exists() and "State:\tZ" not in status.read_text():  # gone, or a zombie nobody reaped yet
        assert time.monotonic() < deadline, "the orphaned job did not exit"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.e2e
def test_a_reproduction_with_its_rows_at_once_equals_one_row_after_the_other(tmp_path, shared_data_dir):
    from vaelab.studies.reproduce.presets import get_preset
    from vaelab.studies.reproduce.run import reproduce

    preset = get_preset("kingma2013")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_after_the_other = reproduce(preset, "smoke", tmp_path / "sequential", data_dir=shared_data_dir, progress=False, jobs=1)
    finally:
        torch.set_num_threads(threads)
    at_once = reproduce(preset, "smoke", tmp_path / "at-once", data_dir=shared_data_dir, progress=False, jobs=2, threads=1)
    assert len(at_once.rows) == 2 and all(row["measured"] is not None for row in at_once.rows)
    assert [row["measured"] for row in at_once.rows] == [row["measured"] for row in one_after_the_other.rows]
