"""The run-directory room: which files vaelab writes into a run or study directory (the file
registry), how they are written (atomically: a crash never leaves one half-written), how they are
read back (validated into one-line errors), the checkpoint schema, and who may write at once.

The file registry (every name any command writes; nothing else is ever deleted or replaced):

- ``environment.json``: versions, platform, command line and the data files' sha256; written first
  by ``train``, it marks a directory as a vaelab run (:func:`is_vaelab_run`);
- ``config.json``: the resolved :class:`~vaelab.config.ExperimentConfig`;
- ``metrics.jsonl``: one JSON object per line, appended with a single write and fsync;
- ``checkpoint.pt``: model, optimiser and RNG state (:data:`CHECKPOINT_KEYS`), replaced every epoch;
- ``best.pt``: with ``--select-on``, the model of the best validation bound so far
  (:data:`BEST_CHECKPOINT_KEYS`), written before the ``checkpoint.pt`` of its epoch;
- ``bounds-*.npz``, ``exact-*.json``: per-image bounds and exact log-likelihoods of evaluations;
- ``bound_curve.json``: a compare study's L_k-against-k curve of the run;
- ``final.json``: ``reproduce``'s final test L_k of the run's checkpoint;
- ``tensorboard/events.out.tfevents.*``: ``train --tensorboard``'s event files;
- study files: ``compare.json``, ``report.html`` and ``figures/`` (compare); ``reproduce.json``,
  ``report.md``, ``report.json`` (reproduce); ``bounds.json``, ``bounds.html`` and figures (bounds);
- multi-seed parents (``--seeds``): ``seeds.json`` (the seeds; each seed a run in ``seed-<s>/``) and
  ``across-seeds-*.json`` (``evaluate PARENT``'s and ``report PARENT``'s summaries over seeds);
- ``.vaelab.lock``: the lock of the directory (see :func:`directory_lock`).

Who may touch a directory at once: every command that writes into a run or study directory
(``train``, ``evaluate``, ``compare``, ``report``, ``bounds``, ``reproduce``) holds its lock for as
long as it runs, and a second one is refused in one line naming the holder's PID. Commands that only
read a run (``bounds --run``, a study reading its runs) take no lock: every file is replaced
atomically (metrics rows are whole appended lines), so they read a consistent snapshot.

Resume and overwrite (``train``, and through it ``compare`` and ``reproduce``): a vaelab run is
continued only with ``resume`` and replaced only with ``overwrite``, which deletes the run's
registry files (``final.json`` included, so a later ``reproduce`` measures the new model) and
nothing else; a non-empty directory that is not a vaelab run is refused whatever the options.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import platform
import re
import stat
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import RunError, one_line
from vaelab.machine import subnormals_flushed

# The file registry: files of a run.
CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
# Which checkpoint of a run to read: the best on the validation split (``--select-on``, BEST_FILE) or the last.
CHECKPOINT_CHOICES = ("best", "last")
PER_IMAGE_PATTERN = "bounds-*.npz"  # vaelab.evaluation.per_image.bounds_file_name
EXACT_PATTERN = "exact-*.json"  # vaelab.evaluation.exact.exact_file
GAPS_PATTERN = "gaps-*.npz"  # vaelab.evaluation.per_image.gaps_file
BOUND_CURVE_FILE = "bound_curve.json"
FINAL_FILE = "final.json"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_PATTERN = f"{TENSORBOARD_DIR}/events.out.tfevents.*"  # what torch's SummaryWriter names its files
# Files of a study directory.
STUDY_FILE = "compare.json"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
REPRODUCE_FILE = "reproduce.json"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
BOUNDS_RESULTS_FILE = "bounds.json"
BOUNDS_PAGE_FILE = "bounds.html"
FIGURE_PATTERNS = ("*.png", "*.pdf")
SEEDS_FILE = "seeds.json"  # vaelab.evaluation.across_seeds
ACROSS_SEEDS_PATTERN = "across-seeds-*.json"  # vaelab.evaluation.across_seeds.summary_file
LOCK_FILE = ".vaelab.lock"

# The files that make up a run (those of a study's runs and of `evaluate --exact` included).
RUN_FILE_PATTERNS = (
    CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, CHECKPOINT_FILE, BEST_FILE, BOUND_CURVE_FILE, FINAL_FILE, EXACT_PATTERN, PER_IMAGE_PATTERN, GAPS_PATTERN,
    TENSORBOARD_PATTERN,
)
STUDY_FILE_PATTERNS = (
    STUDY_FILE, REPORT_FILE, REPRODUCE_FILE, REPORT_MD, REPORT_JSON, BOUNDS_RESULTS_FILE, BOUNDS_PAGE_FILE, SEEDS_FILE, ACROSS_SEEDS_PATTERN, *FIGURE_PATTERNS,
)
# Per-image bounds of an in-training evaluation: written beside its metrics row, before the checkpoint.
EVALUATION_BOUNDS_PATTERN = "bounds-eval-*.npz"

# What a checkpoint holds (written at the end of every epoch by vaelab.training).
CHECKPOINT_KEYS = frozenset({"epoch", "step", "wall_seconds", "model", "optimizer", "data_generator", "noise_generators", "config"})
# What reading a model needs of it (evaluate, load_run): older or hand-made checkpoints may lack the rest.
MODEL_CHECKPOINT_KEYS = frozenset({"epoch", "step", "model", "config"})
# What best.pt holds: the model and what it was selected on (``selected_on``, e.g. 'valid L_1000', and that ``bound``).
BEST_CHECKPOINT_KEYS = MODEL_CHECKPOINT_KEYS | {"selected_on", "bound"}
# checkpoint.pt of a run with --select-on also holds "selection": the best epoch and bound so far,
# the evaluations since (the patience counter) and whether it stopped early; resume restores them.
SELECTION_KEYS = frozenset({"best_epoch", "best_bound", "stale", "stopped"})

# Temporary files of _replace_atomically: ".<name>.vaelab-<8 random characters>.tmp" (tempfile.mkstemp);
# the 'vaelab-' and a registry <name> tell them from a user's own files.
_TEMPORARY_INFIX = ".vaelab-"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.vaelab-[A-Za-z0-9_]{8}\.tmp$")


def is_registry_name(name: str) -> bool:
    """Whether ``name`` is the name of a file vaelab writes into run or study directories."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in (*RUN_FILE_PATTERNS, *STUDY_FILE_PATTERNS))


def is_vaelab_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of a vaelab atomic write of a registry file."""
    match = _TEMPORARY.match(name)
    return match is not None and is_registry_name(match["name"])


class DirectoryLockedError(RunError):
    """Another process is writing into the directory."""


# Directories this process holds the lock of: resolved path -> (file descriptor, depth). A study
# holds its directory while it trains and then builds its report, which takes the lock again.
_held_locks: dict[Path, list[int]] = {}


@contextlib.contextmanager
def directory_lock(directory: str | Path, command: str):
    """Hold the exclusive lock of ``directory`` (which must exist) while the block runs.

    An advisory ``fcntl.flock`` on ``directory/.vaelab.lock``: the kernel releases it when the
    process exits in any way (a SIGKILL included), so a lock is never stale; the holder's PID and
    ``command`` are written into the file only for the refusal message. Re-entrant within a
    process. On taking it, temporary files of writes killed earlier are removed.

    Raises:
        DirectoryLockedError: another process holds it (one line naming its PID).
        RunError: the lock file cannot be created, or is not a regular file of the directory
            alone (a symbolic link, a hard link, a FIFO): vaelab never writes through it.
    """
    key = Path(directory).resolve()
    if key in _held_locks:
        _held_locks[key][1] += 1
        try:
            yield
        finally:
            _held_locks[key][1] -= 1
        return
    path = Path(directory) / LOCK_FILE
    descriptor = _open_lock_file(path)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"{path}: cannot lock ({error.strerror})") from None
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
            raise DirectoryLockedError(f"{directory}: in use by {holder}; wait for it to finish, or stop it first") from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"process {os.getpid()} ({command})\n".encode(), 0)
        except OSError as error:  # a full disk: the lock is held all the same, but nothing can be written
            raise RunError(f"{path}: cannot write ({error.strerror})") from None
        remove_stale_temporaries(directory)
        _held_locks[key] = [descriptor, 1]
        try:
            yield
        finally:
            del _held_locks[key]
    finally:
        os.close(descriptor)  # releases the flock


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file ``path`` for writing without following a symbolic link and
    without truncating, then check that it is a regular file with no other name: a lock that is
    a link to a file elsewhere would otherwise have that file overwritten with the holder's note."""
    try:  # no O_TRUNC: the file is truncated only once known to be the directory's own; O_NONBLOCK: a FIFO never hangs the open
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW's answer for a symbolic link
            raise RunError(f"{path}: is a symbolic link; a lock must be a regular file in the directory (remove the link)") from None
        raise RunError(f"{path}: cannot create the lock file ({error.strerror})") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:  # > 1, not != 1: some network file systems report 0
        os.close(descriptor)
        what = "has other names (a hard link)" if stat.S_ISREG(status.st_mode) else "is not a regular file"
        raise RunError(f"{path}: {what}; a lock must be a regular file of the directory alone (remove it)")
    return descriptor


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes of vaelab left in ``directory`` and its
    subfolders one level down (e.g. ``figures/``), and no other file (:func:`is_vaelab_temporary`);
    call only while holding its lock."""
    removed = []
    directory = Path(directory)
    # a subfolder with its own lock file (a study's run) is cleaned by whoever takes that lock
    subfolders = [child for child in directory.iterdir() if child.is_dir() and not child.is_symlink() and not (child / LOCK_FILE).exists()]
    for folder in [directory, *subfolders]:
        for path in folder.iterdir():
            if is_vaelab_temporary(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def is_vaelab_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a vaelab run: its ``environment.json`` (the first file ``train``
    writes) is a JSON object naming vaelab among its packages, as :func:`environment_info` writes.
    A user's own ``config.json`` or ``metrics.jsonl`` does not make a folder a run."""
    try:
        environment = json.loads((Path(run_dir) / ENVIRONMENT_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(environment, dict) and isinstance(environment.get("packages"), dict) and "vaelab" in environment["packages"]


def run_files(run_dir: str | Path) -> list[Path]:
    """The files of the registry that vaelab wrote into ``run_dir``, sorted: none unless it is a
    vaelab run (:func:`is_vaelab_run`)."""
    run_dir = Path(run_dir)
    if not is_vaelab_run(run_dir):
        return []
    paths = {path for pattern in RUN_FILE_PATTERNS for path in run_dir.glob(pattern)}
    # a subfolder (tensorboard/) that is a link leads out of the run: nothing there is the run's
    return sorted(path for path in paths if path.is_file() and (path.parent == run_dir or not path.parent.is_symlink()))


def directory_contents(directory: str | Path) -> list[str]:
    """The names in ``directory`` other than its lock file and temporaries of killed writes, sorted."""
    return sorted(path.name for path in Path(directory).iterdir() if path.name != LOCK_FILE and not is_vaelab_temporary(path.name))


def refuse_foreign_contents(directory: Path, what: str) -> None:
    """Raise RunError (one line, naming a few of its entries) when ``directory``, which holds no
    vaelab ``what`` ('run', 'study'), is not empty: vaelab never writes into someone else's files."""
    others = directory_contents(directory)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunError(f"{directory}: not empty and not a vaelab {what} (holds {shown}); vaelab replaces none of it, choose a new or empty directory for --out")


def check_run_directory(run_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a directory that ``train`` must not write into, before anything is written.

    A vaelab run (:func:`is_vaelab_run`) is continued only with ``resume`` and replaced only with
    ``overwrite``. ``resume`` needs a checkpoint, except in a run that never
    finished its first epoch (nothing but that epoch's rows, which it recomputes). A non-empty
    directory that is not a run is refused whatever the options: nothing vaelab did not write is
    ever replaced.

    Raises:
        RunError: one line saying why and what to pass instead.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a directory; choose another --out")
    for name in (CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, CHECKPOINT_FILE):
        path = run_dir / name
        if (path.exists() or path.is_symlink()) and not path.is_file():  # a folder, a device, a dangling or looping link
            raise RunError(f"{path}: not a regular file; a run's files must be plain files")
    files = run_files(run_dir)
    if not files:
        refuse_foreign_contents(run_dir, "run")
        return
    if overwrite:
        return
    names = ", ".join(path.name for path in files)
    if not resume:
        raise RunError(f"{run_dir}: already holds a run ({names}); pass --resume to continue it, --overwrite to replace it, or choose another --out")
    if not (run_dir / CHECKPOINT_FILE).exists():
        rows = read_metrics(run_dir / METRICS_FILE)
        kept = [
            path.name for path in files
            if path.name not in (CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE)
            and path.name != BEST_FILE and not path.match(EVALUATION_BOUNDS_PATTERN) and not path.match(TENSORBOARD_PATTERN)  # epoch 1's: recomputed
        ]
        if kept or any(row["epoch"] != 1 or row["kind"] not in ("train", "eval", "selected") for row in rows):
            raise RunError(
                f"{run_dir}: holds results ({names}) but no {CHECKPOINT_FILE} to resume from; "
                "pass --overwrite to replace them, or choose another --out"
            )


def make_directory(path: Path, what: str = "directory", *, parents: bool = True) -> None:
    """Create ``path`` (and its parents) if absent; a failure is a one-line :class:`RunError`
    naming it as ``what`` (e.g. 'run directory')."""
    try:
        Path(path).mkdir(parents=parents, exist_ok=True)
    except OSError as error:
        raise RunError(f"{path}: cannot create the {what} ({error.strerror})") from None


@contextlib.contextmanager
def open_run_directory(run_dir: str | Path, command: str, *, resume: bool, overwrite: bool):
    """Create ``run_dir`` if needed and hold its lock while the block runs, after
    :func:`check_run_directory` (checked before creating anything, and again under the lock);
    with ``overwrite``, the run's files are deleted once the lock is held."""
    run_dir = Path(run_dir)
    check_run_directory(run_dir, resume=resume, overwrite=overwrite)
    make_directory(run_dir, "run directory")
    with directory_lock(run_dir, command):
        check_run_directory(run_dir, resume=resume, overwrite=overwrite)
        if overwrite:
            for path in run_files(run_dir):
                path.unlink()
        yield run_dir


def _replace_atomically(path: Path, write) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename."""
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}{_TEMPORARY_INFIX}", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise RunError(f"{path}: cannot write ({error.strerror})") from None
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise RunError(f"{path}: cannot write ({error.strerror or error}); the previous version is intact") from None
    except RuntimeError as error:  # torch.save reports a failed write (a full disk) as a 40-line RuntimeError
        Path(temporary).unlink(missing_ok=True)
        cause = error.__context__  # the OSError of the write it swallowed, where there was one
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else one_line(error, 200)
        raise RunError(f"{path}: cannot write ({reason}); the previous version is intact") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    _replace_atomically(path, lambda file: file.write(text.encode()))


def write_json_atomic(path: Path, values: Any) -> None:
    write_text_atomic(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_arrays_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez_compressed`` of ``arrays`` (name -> array) into ``path`` atomically."""
    import numpy as np

    _replace_atomically(path, lambda file: np.savez_compressed(file, **arrays))


def write_figure_atomic(path: Path, figure, **savefig_options) -> None:
    """``figure.savefig`` into ``path`` atomically, in the format of its suffix: a kill while
    drawing leaves the previous figure whole, never a 0-byte PNG."""
    path = Path(path)
    _replace_atomically(path, lambda file: figure.savefig(file, format=path.suffix.lstrip("."), **savefig_options))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (the old checkpoint survives a crash)."""
    _replace_atomically(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path, required: frozenset[str] = MODEL_CHECKPOINT_KEYS) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only, never
    code) and check its shape: a dict holding ``required``, an integer epoch and step, a model
    state of named tensors, an embedded config object.

    Torch's warnings about the file (e.g. a legacy raw pickle) are kept from the terminal: the
    refusal says what is wrong in one line.

    Raises:
        RunError: the file is absent, unreadable, or not a vaelab checkpoint (one line naming it).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: no checkpoint") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise RunError(f"{path}: unreadable checkpoint ({type(error).__name__})") from None
    problem = _checkpoint_problem(checkpoint, required)
    if problem:
        raise RunError(f"{path}: not a vaelab checkpoint ({problem})")
    return checkpoint


def _checkpoint_problem(checkpoint: Any, required: frozenset[str]) -> str | None:
    if not isinstance(checkpoint, dict):
        return f"holds a {type(checkpoint).__name__}, not a dict"
    missing = sorted(required - set(checkpoint))
    if missing:
        return f"missing {', '.join(map(str, missing))}"
    for key in ("epoch", "step"):
        value = checkpoint.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {value!r}, not a non-negative integer"
    if "wall_seconds" in checkpoint and (isinstance(checkpoint["wall_seconds"], bool) or not isinstance(checkpoint["wall_seconds"], (int, float))):
        return f"wall_seconds is {checkpoint['wall_seconds']!r}, not a number"
    model = checkpoint.get("model", {})
    if not isinstance(model, dict) or not all(isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in model.items()):
        return "its model entry is not a state dict of named tensors"
    if "config" in checkpoint and not isinstance(checkpoint["config"], dict):
        return "its config entry is not an object"
    if "selection" in checkpoint and not (isinstance(checkpoint["selection"], dict) and SELECTION_KEYS <= set(checkpoint["selection"])):
        return f"its selection entry is not an object with {', '.join(sorted(SELECTION_KEYS))}"
    for key in ("optimizer",):
        if key in checkpoint and not isinstance(checkpoint[key], dict):
            return f"its {key} entry is not a dict"
    if "data_generator" in checkpoint and not isinstance(checkpoint["data_generator"], torch.Tensor):
        return "its data_generator entry is not a tensor"
    noise = checkpoint.get("noise_generators", [])
    if not isinstance(noise, (list, tuple)) or not noise and "noise_generators" in checkpoint or not all(isinstance(state, torch.Tensor) for state in noise):
        return "its noise_generators entry is not a list of tensors"
    return None


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state)`` after refusing non-finite values, naming the tensor: a NaN
    weight must never reach an evaluation, where a fused kernel (oneDNN's ReLU maps NaN to 0)
    could turn it into a finite, plausible bound.

    Raises:
        RunError: a tensor holds NaN or infinity, or the state does not fit ``model`` (another
            architecture or size): one line naming ``path``.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            kind = "NaN" if torch.isnan(tensor).any() else "infinite values"
            raise RunError(f"{path}: parameter {name} holds {kind}; refusing to evaluate or resume it")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise RunError(f"{path}: its model does not fit the run's config ({one_line(error)})") from None


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one row as a single write, then fsync: a crash leaves at most a partial last line,
    which the next append cuts off before writing (so rows never run together)."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    try:
        with open(path, "ab+") as file:
            _cut_partial_last_line(file)
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise RunError(f"{path}: cannot append metrics ({error.strerror})") from None


def _cut_partial_last_line(file) -> None:
    """Truncate an append-mode binary file after its last newline, if it does not end in one."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        return
    file.seek(size - 1)
    if file.read(1) == b"\n":
        return
    file.seek(0)
    content = file.read()
    file.truncate(content.rfind(b"\n") + 1)
    file.seek(0, os.SEEK_END)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a metrics file (a partial last line from a crash is ignored)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise RunError(f"{path}: cannot read metrics (a directory)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: cannot read metrics ({getattr(error, 'strerror', None) or error})") from None
    rows = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):  # the text after the last '\n' is partial
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise RunError(f"{path}:{number}: not a JSON row") from None
        problem = _metrics_row_problem(row)
        if problem:
            raise RunError(f"{path}:{number}: not a vaelab metrics row ({problem})")
        rows.append(row)
    return rows


def _metrics_row_problem(row: Any) -> str | None:
    """What is wrong with a parsed metrics row, or None: every row is an object with an integer
    ``epoch`` >= 0, a string ``kind``, and, where present, a string ``split`` and numeric values."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    epoch = row.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch is {epoch!r}, not a non-negative integer"
    if not isinstance(row.get("kind"), str):
        return f"kind is {row.get('kind')!r}, not a string"
    if "split" in row and not isinstance(row["split"], str):
        return f"split is {row['split']!r}, not a string"
    for key in ("bound", "bound_stderr", "elbo", "elbo_stderr", "wall_seconds", "epoch_seconds", "eval_seconds", "k", "num_images", "step"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is {value!r}, not a number"
    return None


def keep_metrics_through_epoch(path: Path, epoch: int) -> None:
    """Rewrite the metrics file atomically with only the rows of epochs <= ``epoch``.

    Used on resume: rows written after the checkpoint being resumed from are recomputed, so
    keeping them would duplicate them.
    """
    rows = read_metrics(path)  # [] when absent; raises for a file that cannot be read (a link loop, a folder)
    if rows or Path(path).is_file():
        rows = [row for row in rows if row["epoch"] <= epoch]
        write_text_atomic(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def source_revision() -> str | None:
    """The git commit of vaelab's source (with ``-dirty`` for uncommitted changes), or None outside a checkout."""
    package_dir = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=package_dir, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def cpu_description() -> dict[str, Any]:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what ``platform`` knows), its logical
    CPU count and the widest vector instructions PyTorch uses on it (e.g. AVX2, AVX512): timings
    of the same code differ with them (an AVX2 and an AVX-512 2-core machine: the MNIST study's
    evaluation 1.5x apart)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "logical_cpus": os.cpu_count(), "capability": torch.backends.cpu.get_cpu_capability()}


def environment_info(data_files: dict[str, str], placement=None) -> dict[str, Any]:
    """Versions, platform and data checksums, recorded next to every run's results."""
    packages = {}
    for name in ("vaelab", "torch", "numpy", "scikit-learn", "scipy", "matplotlib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "subnormals_flushed": subnormals_flushed(),
        "device": str(placement.device) if placement else "cpu",
        "processes": placement.world_size if placement else 1,
        "cuda": torch.cuda.get_device_name(placement.device) if placement and placement.device.type == "cuda" else None,
        "packages": packages,
        "source": source_revision(),
        "command": sys.argv,
        "data_files_sha256": data_files,
    }
