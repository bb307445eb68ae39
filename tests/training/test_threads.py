"""The OpenMP wait policy: set before torch loads its runtime, in effect in a CLI process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from vaelab.threads import configure_threads

pytestmark = pytest.mark.e2e

SRC = REPO_ROOT / "src"
CLI = "from vaelab.cli import main; main(['datasets'])"  # main configures threads before anything loads torch


def _runtime_settings(arguments: list[str], **env: str) -> str:
    """stderr of a Python subprocess whose OpenMP runtime prints its settings as it starts.

    libgomp shows ``OMP_WAIT_POLICY = 'PASSIVE'`` also when the policy is unset (it then spins
    300000 times before sleeping); ``GOMP_SPINCOUNT = '0'`` is what PASSIVE changes.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    environment.update(OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(SRC), **env)
    completed = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=environment, timeout=120)
    assert completed.returncode == 0, completed.stderr
    if "GOMP_SPINCOUNT" not in completed.stderr:
        pytest.skip("this PyTorch's OpenMP runtime is not libgomp, which prints its settings (OMP_DISPLAY_ENV)")
    return completed.stderr


@pytest.mark.slow
def test_a_policy_the_user_set_is_kept():
    settings = _runtime_settings(["-c", CLI], OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in settings and "GOMP_SPINCOUNT = '0'" not in settings


def _configured(busy: bool) -> str:
    return f"from vaelab.threads import configure_threads; assert configure_threads(busy={busy}); import torch; torch.ones(8).sum()"


@pytest.mark.slow
def test_policy_is_passive_on_a_busy_machine_and_left_alone_on_an_idle_one():
    assert "GOMP_SPINCOUNT = '0'" in _runtime_settings(["-c", _configured(busy=True)])
    assert "GOMP_SPINCOUNT = '0'" not in _runtime_settings(["-c", _configured(busy=False)])


@pytest.mark.slow
def test_the_vaelab_command_sees_competing_processes():
    # two busy processes beside it: the command runs with the passive policy
    competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        assert "GOMP_SPINCOUNT = '0'" in _runtime_settings(["-m", "vaelab", "datasets"])
    finally:
        for process in competitors:
            process.kill()
            process.wait()


def test_too_late_once_torch_is_imported(monkeypatch):
    import torch  # noqa: F401  (already imported by the test session; made explicit)

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert configure_threads() is False
    assert "OMP_WAIT_POLICY" not in os.environ
