"""Independent jobs at once, one spawned process each (``vaelab compare --jobs``).

On a CPU, the trainings of a study are independent, and two single-thread processes running two
of them at once beat one two-thread process running them one after the other: a small model's
matmuls leave the second thread waiting at every synchronisation, and beside other busy
processes a pool's thread waits for its descheduled peer. Measured with the README's main command
(``vaelab compare`` on digits, two algorithms) on the 2-core machine: one after the other 25 s
alone and 98 s beside two competing PyTorch trainings (3.9x); one process each 22 s and 67 s
(3.0x, the fair share of three busy processes on two cores). The MNIST study's first epoch with
its L_1000 evaluations: 81 s one after the other, 71 s at once.

Each job runs in a *spawned* process (a fork would copy the parent's OpenMP pool) with its own
thread count, set before its first parallel op; its progress bars and lines are drawn by the parent
(:mod:`vaelab.progress`), one bar per running job.
Its process group is its own, so the terminal's Ctrl-C reaches the parent alone, which passes each
SIGINT or SIGTERM it gets on to every running job: the first makes each finish its epoch and
checkpoint (:func:`vaelab.training.train`), a second stops them at once, as for ``vaelab train``.
The parent records these signals in a handler rather than letting a KeyboardInterrupt land wherever
it happens to be (:class:`_Signals`): a signal that arrived while it started a job or read one's
outcome was otherwise passed on to none, and the jobs were killed without their checkpoint.
A job's expected failure (a :class:`vaelab.errors.VaelabError`) comes back to the parent and is
raised there once the other jobs have stopped the same way, their checkpoints intact; a bug in a
job prints its traceback and is raised as a RuntimeError. A job's function and arguments must be
picklable: the function importable by name, which user networks given as ``MODULE:FACTORY`` are.
On Linux a job also gets SIGTERM when the parent dies (SIGKILL), so none runs on alone, and then
exits without waiting for its progress messages to be read. A job computes with subnormal floats
as the calling thread does (flushed under the CLI; :func:`vaelab.machine.flushing_subnormals`),
so its numbers are those the same job would give in-process with the same threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from vaelab import progress
from vaelab.errors import ConfigError, Interrupted, RunError, VaelabError
from vaelab.progress import BarServer

STOPS = {signal.SIGINT, signal.SIGTERM}  # passed on to every running job (module docstring)

def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as under ``taskset`` or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def processes_and_threads(count: int, jobs: int | None = None, threads: int | None = None, device: str = "cpu") -> tuple[int, int | None]:
    """How to run ``count`` jobs on ``device``: (processes at once, threads each).

    ``jobs`` processes at most (None: one per job, up to the usable CPUs), each with ``threads``
    threads (None: the usable CPUs shared out among the processes, at least one each). On a GPU
    or under torchrun the jobs run one after the other in this process: (1, ``threads``).

    Raises:
        ConfigError: ``jobs`` above 1 on a GPU or under torchrun.
    """
    if jobs == 1 or count == 1:
        return 1, threads
    from vaelab.distributed import resolve_device  # loads torch: not at import, for the CLI's start-up

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or resolve_device(device).type != "cpu":
        if jobs is None:
            return 1, threads
        raise ConfigError(f"--jobs {jobs}: jobs run at once on the CPU only; on a GPU or under torchrun leave --jobs out")
    processes = max(1, min(count, jobs if jobs is not None else usable_cpus()))
    return processes, threads or max(1, usable_cpus() // processes)


def run_jobs(function: Callable[..., Any], jobs: Sequence[tuple], processes: int, threads: int) -> None:
    """Call ``function(*arguments)`` for every ``arguments`` of ``jobs``, ``processes`` at a time,
    each in its own spawned process with ``threads`` threads; return when all have finished.

    Raises:
        Interrupted: this process got SIGINT or SIGTERM (``signum``, a KeyboardInterrupt); every
            running job was stopped by the same signal, and none was started after it.
        VaelabError: the first job that failed so, or was killed (RunError); the others were
            stopped with SIGTERM. A job stopped by a signal of its own is raised as its interrupt.
        RuntimeError: a job failed with an unexpected error (its traceback is printed above).
    """
    from vaelab.machine import subnormals_flushed  # loads torch: not at import, for the CLI's start-up

    flush_subnormals = subnormals_flushed()
    context = multiprocessing.get_context("spawn")
    bars = BarServer(context.Queue())
    waiting = list(enumerate(jobs))
    running: dict[Any, Any] = {}  # process -> the end its outcome arrives at
    failure: BaseException | None = None
    forwarded = 0  # signals of signals.received passed on to the running jobs
    try:
        with _Signals.recorded() as signals:
            while waiting or running:
                while waiting and len(running) < processes and not signals.received and failure is None:
                    number, arguments = waiting.pop(0)
                    receiver, sender = context.Pipe(duplex=False)
                    process = context.Process(target=_job, args=(sender, bars.queue, number, function, arguments, threads, flush_subnormals))
                    with _stops_blocked():  # inherited: the job takes a stop once in its own process group (_job)
                        process.start()
                    sender.close()
                    running[process] = receiver
                for signum in signals.received[forwarded:]:  # also to a job whose start the signal interrupted
                    _signal_all(running, signum)
                forwarded = len(signals.received)
                if not running:
                    break
                # an outcome, a process that ended without one, or a signal; an outcome is read before the join, so a large one cannot block its sender
                ready = set(multiprocessing.connection.wait([*(process.sentinel for process in running), *running.values(), *signals.wakeup]))
                signals.drain()
                for process in [process for process, receiver in running.items() if process.sentinel in ready or receiver in ready]:
                    outcome = _outcome(process, running.pop(process))
                    if outcome is not None and failure is None and not signals.received:  # not a stop this process asked for
                        failure = outcome
                        _signal_all(running, signal.SIGTERM)
    finally:
        for process in running:  # only left by an error of this function itself: nothing may outlive it
            process.kill()
            process.join()
        bars.stop()
    if signals.received:
        raise Interrupted(signals.received[0])
    if failure is not None:
        raise failure


class _Signals:
    """SIGINT and SIGTERM that reach this process while its jobs run, recorded in ``received`` (to be
    passed on by the loop of :func:`run_jobs`) instead of raised as a KeyboardInterrupt wherever the
    main thread is, and ``wakeup``: the end of a pipe that each such signal makes readable, so
    that a wait on it returns even where the signal was taken by another thread (Python then runs
    its handler only once the main thread wakes). Outside the main thread nothing is recorded, as
    no handler can be installed there."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.wakeup: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def drain(self) -> None:
        """Empty the wakeup pipe (its bytes are the signals' numbers, already recorded)."""
        for reader in self.wakeup:
            with contextlib.suppress(BlockingIOError):
                while os.read(reader, 512):
                    pass

    @classmethod
    @contextlib.contextmanager
    def recorded(cls):
        """Record the stops while in the block (main thread only); the previous handlers afterwards."""
        signals = cls()
        if threading.current_thread() is not threading.main_thread():
            yield signals
            return
        reader, writer = os.pipe()
        for end in (reader, writer):
            os.set_blocking(end, False)
        signals.wakeup.append(reader)
        previous_wakeup = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, signals) for signum in STOPS}
        try:
            yield signals
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(reader)
            os.close(writer)


# Seconds a job's process may take to exit after sending its outcome before it is killed (its work,
# checkpoints included, is done then; only the flush of its last progress messages is waited for).
EXIT_GRACE = 60


def _outcome(process: Any, receiver: Any) -> BaseException | None:
    """What the finishing ``process`` sent (None: success), or the error of its death; then its exit."""
    try:
        outcome = receiver.recv()
    except EOFError:  # it died without a word: killed (the out-of-memory killer, SIGKILL), or the interpreter failed
        process.join()
        if process.exitcode < 0:
            return RunError(f"a job's process was killed by signal {-process.exitcode} before it finished; its last checkpoint is intact")
        return RuntimeError(f"a job's process ended with exit code {process.exitcode} before it finished")
    process.join(EXIT_GRACE)
    if process.is_alive():  # stuck in its exit (e.g. a progress queue whose lock a killed job held)
        process.kill()
        process.join()
    return outcome


def _signal_all(running: dict, signum: int) -> None:
    for process in running:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:  # it has just ended
            pass


def _job(sender, bar_queue, number: int, function: Callable[..., Any], arguments: tuple, threads: int, flush_subnormals: bool) -> None:
    """The body of job ``number``'s process: settings, then ``function(*arguments)``; its outcome (None
    or the exception) is sent to the parent. ``flush_subnormals``: the parent's setting (the CLI
    flushes them, :func:`vaelab.machine.flushing_subnormals`), taken before PyTorch's pool
    starts so that its threads inherit it."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # the terminal's Ctrl-C goes to the parent, which passes it on (see the module's docstring)
    _stop_with_the_parent()
    import torch

    torch.set_flush_denormal(flush_subnormals)
    torch.set_num_threads(threads)  # before the first parallel op starts the pool
    progress.send_to(bar_queue, number)
    outcome: BaseException | None = None
    try:
        if hasattr(signal, "pthread_sigmask"):  # blocked since the start (_stops_blocked): one sent meanwhile arrives now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        function(*arguments)
    except (VaelabError, KeyboardInterrupt) as error:
        outcome = error
    except BaseException as error:  # a bug: its traceback here, the parent raises it by name
        traceback.print_exc()
        outcome = RuntimeError(f"{type(error).__name__}: {error}")
    try:
        sender.send(outcome)
    except OSError:  # the parent is gone
        pass
    parent = multiprocessing.parent_process()
    if parent is not None and (os.getppid() != parent.pid or not parent.is_alive()):  # the parent gone: nobody reads the bars, so do not flush them
        bar_queue.cancel_join_thread()


@contextlib.contextmanager
def _stops_blocked():
    """SIGINT and SIGTERM blocked in this thread (where POSIX allows), and so in a process it spawns
    meanwhile: until that process is in its own process group the terminal's Ctrl-C reaches it too,
    and before its handlers exist a stop would end it with a traceback instead of an outcome."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


PR_SET_PDEATHSIG = 1  # prctl(2)


def _stop_with_the_parent() -> None:
    """Linux: get SIGTERM when the parent dies (a SIGKILL of ``vaelab compare``), so that a job stops
    at its next checkpoint instead of running on alone; elsewhere nothing."""
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            return
    except (OSError, AttributeError):  # no prctl: not Linux
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
