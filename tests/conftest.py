"""Shared fixtures: where the real datasets are, and small models with known log p(x)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vaelab.cli import main
from vaelab.exact.linear_gaussian import linear_gaussian_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TIERS = ("algebra", "gradients", "statistics", "contract", "e2e")  # pyproject.toml registers them
UNTIERED = pytest.StashKey[list[str]]()


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    """Record the tests that carry no tier marker, or more than one (tests/test_tiers.py fails on them)."""
    config.stash[UNTIERED] = [item.nodeid for item in items if len({mark.name for mark in item.iter_markers()} & set(TIERS)) != 1]


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
