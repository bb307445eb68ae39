"""Files of a run directory, each written so that a crash never leaves it half-written.

- ``config.json``: the resolved :class:`~vaelab.config.ExperimentConfig`;
- ``environment.json``: versions, platform, command line and the data files' sha256;
- ``metrics.jsonl``: one JSON object per line, appended with a single write and fsync;
- ``checkpoint.pt``: model, optimiser and RNG state, replaced atomically every epoch.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import RunError

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"


def _replace_atomically(path: Path, write) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename."""
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        raise RunError(f"{path}: cannot write ({error.strerror}); the previous version is intact") from None
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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (the old checkpoint survives a crash)."""
    _replace_atomically(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: no checkpoint") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise RunError(f"{path}: unreadable checkpoint ({type(error).__name__})") from None


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
    except (OSError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: cannot read metrics ({error})") from None
    rows = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):  # the text after the last '\n' is partial
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunError(f"{path}:{number}: not a JSON row") from None
    return rows


def keep_metrics_through_epoch(path: Path, epoch: int) -> None:
    """Rewrite the metrics file atomically with only the rows of epochs <= ``epoch``.

    Used on resume: rows written after the checkpoint being resumed from are recomputed, so
    keeping them would duplicate them.
    """
    if Path(path).exists():
        rows = [row for row in read_metrics(path) if row["epoch"] <= epoch]
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
        "torch_threads": torch.get_num_threads(),
        "device": str(placement.device) if placement else "cpu",
        "processes": placement.world_size if placement else 1,
        "cuda": torch.cuda.get_device_name(placement.device) if placement and placement.device.type == "cuda" else None,
        "packages": packages,
        "source": source_revision(),
        "command": sys.argv,
        "data_files_sha256": data_files,
    }
