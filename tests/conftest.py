"""Shared fixtures: where the real datasets are, small models with known log p(x), a tiny trained run
and the command line called in this process; the check that every test has one tier."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelab import runio
from vaelab.cli import main
from vaelab.exact.linear_gaussian import linear_gaussian_model

REPO_ROOT = Path(__file__).resolve().parents[1]
UNTIERED = pytest.StashKey[list[str]]()


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    """Record the tests that carry no tier marker, or more than one (tests/project/test_tiers.py fails
    on them). The tiers are the markers pyproject.toml registers, but slow."""
    tiers = {line.split(":")[0].strip() for line in config.getini("markers")} - {"slow"}
    config.stash[UNTIERED] = [item.nodeid for item in items if len({mark.name for mark in item.iter_markers()} & tiers) != 1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The checksum-verified datasets: $VAELAB_TEST_DATA, else ../shared/data beside the repo."""
    path = Path(os.environ.get("VAELAB_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set VAELAB_TEST_DATA to a folder laid out like shared/data)")
    return path


@pytest.fixture
def linear_gaussian():
    """A 2-D latent, 5-D observed linear-Gaussian model (float64) with a broadened mean-field q,
    and 64 data points drawn from it. Returns (model, x)."""
    generator = torch.Generator().manual_seed(1234)
    weight = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    model = linear_gaussian_model(weight, bias, noise_scale=0.5, posterior_scale_factor=1.5)
    z = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    x = z @ weight.T + bias + 0.5 * torch.randn(64, 5, generator=generator, dtype=torch.float64)
    return model, x


def run_main(args, capsys) -> tuple[int, str]:
    """``vaelab`` in this process: its exit status (argparse's SystemExit included) and its stderr."""
    try:
        status = main(args)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


# The environment of a command line started as a process: one thread, offline, this checkout's code.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT / "src")}
# A tiny CLI run: digits, one thread on the CPU, no progress bars.
TINY = ["--dataset", "digits", "--hidden", "16", "--eval-k", "10", "--eval-train-size", "100", "--no-progress", "--threads", "1", "--device", "cpu"]


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A finished 2-epoch run on digits (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    status, _, stderr = run_cli("train", *TINY, "--epochs", "2", "--out", out)
    assert status == 0, stderr
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, for a test to change."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def vaelab(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m vaelab ARGS`` offline in a new process (``env`` added to this one's environment)."""
    environment = {**os.environ, "VAELAB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *map(str, args)], capture_output=True, text=True, env=environment, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> Path:
    """A finished one-algorithm compare study on digits (copy it before changing it)."""
    out = tmp_path_factory.mktemp("study") / "study"
    status, _, stderr = run_cli("compare", "--algorithms", "aevb", *TINY, "--epochs", "1", "--curve-images", "20", "--out", out)
    assert status == 0, stderr
    return out


@pytest.fixture
def study(finished_study, tmp_path) -> Path:
    """A copy of the finished study, for a test to change."""
    copy = tmp_path / "study"
    shutil.copytree(finished_study, copy)
    return copy
