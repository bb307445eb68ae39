"""``vaelab reproduce``: presets as data, every preset's smoke budget, --list, continuing a killed reproduction."""

from __future__ import annotations

import json

import pytest
import torch

from vaelab.cli import main
from vaelab.errors import RunError
from vaelab.evaluation.per_image import load_per_image
from vaelab.objectives import check_config
from vaelab.studies.reproduce.presets import BUDGETS, PRESETS, get_preset, row_config
from vaelab.studies.reproduce.report import build_report
from vaelab.studies.reproduce.run import reproduce

SOURCES = ("burda2015", "tucker2018", "rainforth2018", "tomczak2018", "davidson2018", "kingma2013")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_presets_cover_the_six_sources_and_every_budget_is_a_valid_config():
    assert all(any(name.startswith(source) for name in PRESETS) for source in SOURCES)
    for preset in PRESETS.values():
        assert preset.band >= 0 and preset.band_source
        for row in preset.rows:
            for budget in BUDGETS:
                check_config(row_config(preset, row, budget))  # the registry's rules hold for each row


def test_burdas_protocol_is_the_published_one():
    preset = get_preset("burda2015-1layer")
    full = row_config(preset, preset.row("iwae-k5"), "full")
    assert (full.train.epochs, full.train.batch_size, full.train.learning_rate, full.train.lr_schedule) == (3280, 20, 1e-3, "burda")
    assert (full.train.adam_beta1, full.train.adam_beta2, full.train.adam_eps) == (0.9, 0.999, 1e-4)
    assert (full.model.latent_dim, full.model.hidden, full.model.activation) == (50, (200, 200), "tanh")
    assert (full.data.dataset, full.data.binarization, full.train.algorithm, full.train.num_samples) == ("mnist", "dynamic", "iwae", 5)
    assert preset.eval_k == 5000 and row_config(preset, preset.row("vae-k1"), "reduced").train.epochs == 364
    assert [row.published for row in preset.rows] == [86.76, 86.47, 86.35, 85.54, 84.78]


def test_list_prints_one_line_per_preset_with_its_published_values(capsys):
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert "IWAE k=5 85.54" in lines[0] and "Table 1" in lines[0] and "135.73" in lines[list(PRESETS).index("davidson2018-2d")]


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.slow
def test_every_presets_smoke_budget_runs(name, tmp_path, shared_data_dir):
    report = reproduce(get_preset(name), "smoke", tmp_path, data_dir=shared_data_dir, progress=False)
    assert len(report.rows) == len(get_preset(name).rows)
    for row in report.rows:
        assert row["epoch"] == 1 and row["k"] == 5 and row["measured"] > 0 and row["stderr"] > 0
        assert (row["gap"] is None) == (row["published"] is None)
        if row["gap"] is not None:
            assert row["gap"] == pytest.approx(row["measured"] - row["published"])
    text = report.markdown.read_text()
    assert "| published NLL | measured NLL |" in text and "Learning curves so far" in text
    assert json.loads((tmp_path / "report.json").read_text())["budget"] == "smoke"


@pytest.mark.slow
def test_a_killed_reproduction_continues_and_a_finished_row_is_not_retrained(tmp_path, shared_data_dir):
    preset = get_preset("kingma2013")
    # "killed" after the first row: only aevb ran
    first = reproduce(preset, "smoke", tmp_path, rows=["aevb"], data_dir=shared_data_dir, progress=False)
    assert [row["measured"] is not None for row in first.rows] == [True, False] and first.claim_holds is None
    assert "not run" in first.markdown.read_text()
    checkpoint = (tmp_path / "aevb" / "checkpoint.pt").stat().st_mtime_ns
    final = (tmp_path / "aevb" / "final.json").read_text()
    per_image = load_per_image(tmp_path / "aevb" / json.loads(final)["bounds_file"])  # the final L_k of each image, saved beside it
    assert per_image["bound"].mean() == pytest.approx(json.loads(final)["bound"], abs=1e-3)

    again = reproduce(preset, "smoke", tmp_path, data_dir=shared_data_dir, progress=False)
    assert (tmp_path / "aevb" / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # not retrained
    assert (tmp_path / "aevb" / "final.json").read_text() == final  # not re-evaluated
    assert all(row["measured"] is not None for row in again.rows) and again.claim_holds is not None
    assert build_report(tmp_path).rows == again.rows  # the report is rebuilt from saved results

    with pytest.raises(RunError, match="budget smoke"):
        reproduce(preset, "reduced", tmp_path, data_dir=shared_data_dir, progress=False)


def test_cli_refuses_an_unknown_preset_in_one_line(tmp_path, capsys):
    assert main(["reproduce", "no-such-paper", "--out", str(tmp_path)]) == 1
    assert "unknown preset 'no-such-paper'" in capsys.readouterr().err
