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

SOURCES = ("burda2015", "tucker2018", "rainforth2018", "tomczak2018", "davidson2018", "kingma2013", "sonderby2016")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.contract
def test_presets_cover_the_seven_sources_and_every_budget_is_a_valid_config():
    assert all(any(name.startswith(source) for name in PRESETS) for source in SOURCES)
    for preset in PRESETS.values():
        assert preset.band >= 0 and preset.band_source
        for row in preset.rows:
            for budget in BUDGETS:
                check_config(row_config(preset, row, budget))  # the registry's rules hold for each row


@pytest.mark.algebra
def test_burdas_protocol_is_the_published_one():
    preset = get_preset("burda2015-1layer")
    full = row_config(preset, preset.row("iwae-k5"), "full")
    assert (full.train.epochs, full.train.batch_size, full.train.learning_rate, full.train.lr_schedule) == (3280, 20, 1e-3, "burda")
    assert (full.train.adam_beta1, full.train.adam_beta2, full.train.adam_eps) == (0.9, 0.999, 1e-4)
    assert (full.model.latent_dim, full.model.hidden, full.model.activation) == (50, (200, 200), "tanh")
    assert (full.data.dataset, full.data.binarization, full.train.algorithm, full.train.num_samples) == ("mnist", "dynamic", "iwae", 5)
    assert preset.eval_k == 5000 and row_config(preset, preset.row("vae-k1"), "reduced").train.epochs == 364
    assert [row.published for row in preset.rows] == [86.76, 86.47, 86.35, 85.54, 84.78]


@pytest.mark.algebra
def test_the_ladder_preset_is_the_sources_protocol_on_vaelabs_conv_ladder():
    preset = get_preset("sonderby2016-ladder")
    full = row_config(preset, preset.row("ladder-12"), "full")
    assert (full.model.architecture, full.model.latent_dim, full.model.ladder_merge) == ("conv-ladder", (32,) * 12, "residual")
    assert (full.train.algorithm, full.train.num_samples, full.train.free_bits, full.train.batch_size, full.train.learning_rate) == ("aevb", 1, 1.0, 64, 3e-4)
    assert (full.data.dataset, full.data.binarization, preset.eval_k, preset.rows[0].published) == ("binarized-mnist", "none", 1000, 78.30)
    assert row_config(preset, preset.row("ladder-12"), "reduced").train.epochs == 50 and full.train.epochs == 1000


@pytest.mark.e2e
def test_list_prints_one_line_per_preset_with_its_published_values(capsys):
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert "IWAE k=5 85.54" in lines[0] and "published: Burda et al. 2015, Table 1" in lines[0] and "135.73" in lines[list(PRESETS).index("davidson2018-2d")]
    assert "independent reproduction" in lines[list(PRESETS).index("tucker2018-dreg")] and "(ordering of the ELBO)" in lines[list(PRESETS).index("kingma2013")]
    assert "conv ladder, 12 layers 78.30" in lines[list(PRESETS).index("sonderby2016-ladder")]


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.slow
@pytest.mark.contract
def test_every_presets_smoke_budget_runs(name, tmp_path, shared_data_dir):
    report = reproduce(get_preset(name), "smoke", tmp_path, data_dir=shared_data_dir, progress=False)
    assert len(report.rows) == len(get_preset(name).rows)
    for row in report.rows:
        assert row["epoch"] == 1 and row["k"] == 5 and row["measured"] > 0 and row["stderr"] > 0
        assert (row["gap"] is None) == (row["published"] is None)
        if row["gap"] is not None:
            assert row["gap"] == pytest.approx(row["measured"] - row["published"])
    text = report.markdown.read_text()
    assert "| reference NLL | source | measured NLL |" in text and "Learning curves so far" in text
    assert json.loads((tmp_path / "report.json").read_text())["budget"] == "smoke"


@pytest.mark.slow
@pytest.mark.e2e
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


@pytest.mark.e2e
def test_cli_refuses_an_unknown_preset_in_one_line(tmp_path, capsys):
    assert main(["reproduce", "no-such-paper", "--out", str(tmp_path)]) == 1
    assert "unknown preset 'no-such-paper'" in capsys.readouterr().err


@pytest.mark.contract
def test_every_reference_number_names_its_source_and_only_paper_numbers_are_published():
    for preset in PRESETS.values():
        for row in preset.rows:
            assert row.source.citation and row.source.words.startswith(row.source.kind), (preset.name, row.name)
    tucker = get_preset("tucker2018-dreg")
    assert all(row.source.kind == "independent reproduction" for row in tucker.rows)  # not the paper's numbers
    assert "84.78" in tucker.notes  # the disagreement with Burda et al.'s IWAE k=50 is stated
    assert get_preset("burda2015-1layer").row("iwae-k50").source.kind == "published"
    assert "pseudo-inputs are free parameters" in get_preset("tomczak2018-vamp").notes
    assert "closed-form KL" in get_preset("burda2015-1layer").notes


def _saved_reproduction(out, preset, finals):
    """A reproduction directory as ``reproduce`` leaves it, from hand-made final evaluations (row -> (L_k, ELBO))."""
    (out / "reproduce.json").write_text(json.dumps({"preset": preset, "budget": "smoke"}))
    for row, (bound, elbo) in finals.items():
        (out / row).mkdir()
        (out / row / "final.json").write_text(json.dumps(
            {"bound": bound, "bound_stderr": 0.5, "elbo": elbo, "elbo_stderr": 0.6, "k": 5, "epoch": 1, "num_images": 500, "eval_seconds": 1.0}
        ))


@pytest.mark.algebra
def test_the_report_says_published_only_for_paper_numbers(tmp_path):
    _saved_reproduction(tmp_path, "tucker2018-dreg", {"iwae-dreg-k50": (-90.0, -95.0), "iwae-k50": (-91.0, -96.0)})
    report = build_report(tmp_path)
    table = [line for line in report.markdown.read_text().splitlines() if line.startswith("| IWAE")]
    assert len(table) == 2 and all("independent reproduction: " in line and "published" not in line for line in table)
    assert all("independent reproduction 84." in line for line in report.lines)
    assert "| reference NLL | source |" in report.markdown.read_text()


@pytest.mark.algebra
def test_kingma2013s_ordering_reads_the_elbo_as_the_paper_compares_it(tmp_path):
    # AEVB has the better ELBO but the worse L_k: the paper's claim (on the ELBO) holds
    _saved_reproduction(tmp_path, "kingma2013", {"aevb": (-101.0, -104.0), "wake-sleep": (-100.0, -106.0)})
    report = build_report(tmp_path)
    assert report.claim_holds is True
    assert [row["elbo"] for row in report.rows] == [104.0, 106.0] and [row["measured"] for row in report.rows] == [101.0, 100.0]
    assert "Published ordering (test -ELBO, best first: aevb, wake-sleep): holds." in report.markdown.read_text()
    assert "| 101.00 ± 0.50 | 104.00 ± 0.60 |" in report.markdown.read_text()  # L_5000's NLL still shown beside the -ELBO
