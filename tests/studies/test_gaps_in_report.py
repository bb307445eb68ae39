"""The inference gaps of `vaelab evaluate RUN --gaps` appear in the compare report of the run's study."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e


def test_a_studys_report_shows_the_gaps_of_its_runs(finished_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    status, _, stderr = run_cli("report", study)
    assert status == 0, stderr
    assert 'id="gaps"' not in (study / "report.html").read_text(), "no gaps table before any run has its gaps"

    status, stdout, stderr = run_cli("evaluate", study / "aevb", "--gaps", "--images", "3", "--k", "10", "--steps", "2", "--gap-steps", "5", "--no-progress")
    assert status == 0, stderr
    (saved,) = (study / "aevb").glob("gaps-test-epoch*.npz")
    with np.load(saved) as values:
        approximation = values["approximation_gap"]
    status, _, stderr = run_cli("report", study)
    assert status == 0, stderr
    page = (study / "report.html").read_text()
    table = page[page.index('id="gaps"') : page.index("</table>", page.index('id="gaps"'))]
    expected = f"{approximation.mean():.2f} ± {approximation.std(ddof=1) / 3**0.5:.2f}"
    assert "<td>AEVB</td>" in table and '<td class="number">3</td>' in table and expected in table, table
