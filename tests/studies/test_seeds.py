"""Seeds as an axis (``--seeds``): the statistics across seeds against scipy on hand-made numbers, the
parent layout, and end to end on digits: every seed's run equals its lone run, a 3-seed compare writes
its runs, table and sentence, and a killed multi-seed run resumes to the same result."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from vaelab.cli import main
from vaelab.errors import ConfigError, RunError
from vaelab.evaluation.across_seeds import (
    across_seeds,
    compare_across_seeds,
    load_seeds,
    parse_seeds,
    save_seeds,
    seed_runs,
    seed_test_words,
)
from vaelab.config import DataConfig, ExperimentConfig, TrainConfig
from vaelab.runio import append_metrics
from vaelab.runio import is_registry_name, read_metrics
from vaelab.studies.compare.figures import training_curves_figure
from vaelab.studies.compare.summary import Series, seeds_comparison_sentence

# --- the statistics, against scipy -------------------------------------------------------------

VALUES = {0: 1.0, 1: 2.0, 2: 4.0, 3: 7.0}  # mean 3.5, sd sqrt(7)


@pytest.mark.algebra
def test_mean_sd_and_t_interval_match_scipy():
    summary = across_seeds(VALUES)
    x = np.array(list(VALUES.values()))
    assert summary.mean == 3.5
    assert summary.sd == pytest.approx(math.sqrt(7.0), rel=1e-12)  # ddof = 1: (6.25 + 2.25 + 0.25 + 12.25) / 3
    low, high = stats.t.interval(0.95, df=3, loc=x.mean(), scale=stats.sem(x))
    assert summary.interval == pytest.approx((low, high), rel=1e-12)
    assert summary.per_seed_words == "0: 1.00, 1: 2.00, 2: 4.00, 3: 7.00"


@pytest.mark.algebra
def test_paired_test_by_seed_matches_ttest_rel():
    first, second = across_seeds({0: -90.0, 1: -91.5, 2: -89.0}), across_seeds({0: -93.0, 1: -93.9, 2: -92.6})
    test = compare_across_seeds(first, second)
    expected = stats.ttest_rel([-90.0, -91.5, -89.0], [-93.0, -93.9, -92.6])
    assert test.paired and test.name == "paired t-test by seed"
    assert test.difference == pytest.approx(np.mean([3.0, 2.4, 3.6]))
    assert (test.statistic, test.p_value, test.df) == pytest.approx((expected.statistic, expected.pvalue, 2))


@pytest.mark.algebra
def test_pairing_follows_seeds_not_order():
    first = across_seeds({0: 1.0, 1: 5.0, 2: 2.0})
    second = across_seeds({2: 1.5, 0: 0.0, 1: 4.0})  # the same seeds listed in another order
    expected = stats.ttest_rel([1.0, 5.0, 2.0], [0.0, 4.0, 1.5])
    assert compare_across_seeds(first, second).p_value == pytest.approx(expected.pvalue)


@pytest.mark.algebra
def test_welch_test_where_the_seeds_differ():
    first, second = across_seeds({0: 1.0, 1: 2.0, 2: 4.0}), across_seeds({5: 0.0, 6: 0.5, 7: 0.7, 8: 0.1})
    test = compare_across_seeds(first, second)
    expected = stats.ttest_ind([1.0, 2.0, 4.0], [0.0, 0.5, 0.7, 0.1], equal_var=False)
    assert not test.paired and test.name == "Welch's t-test"
    assert (test.statistic, test.p_value, test.df) == pytest.approx((expected.statistic, expected.pvalue, expected.df))
    assert test.sizes == (3, 4) and "Welch's t-test over 3 and 4 seeds" in seed_test_words(test)  # both samples' sizes


@pytest.mark.algebra
def test_one_seed_has_no_spread_and_says_so():
    one = across_seeds({4: -95.0})
    assert (one.sd, one.interval) == (None, None)
    assert str(one) == "-95.00 (1 seed: no spread)" and one.interval_words == "none (1 seed)"
    test = compare_across_seeds(one, across_seeds({4: -96.0}))
    assert test.p_value is None and test.difference == 1.0
    assert seed_test_words(test) == "untested across seeds (one seed gives no spread to test against)"


@pytest.mark.algebra
def test_identical_values_give_zero_spread_and_no_test():
    same = across_seeds({0: -3.0, 1: -3.0, 2: -3.0})
    assert same.sd == 0.0 and same.interval == (-3.0, -3.0)
    test = compare_across_seeds(same, across_seeds({0: -4.0, 1: -4.0, 2: -4.0}))  # every paired difference 1: nothing to test against
    assert test.p_value is None and "no spread at all" in seed_test_words(test)


@pytest.mark.algebra
def test_within_the_spread_of_seeds_in_words():
    test = compare_across_seeds(across_seeds({0: 1.0, 1: 3.0, 2: 2.0}), across_seeds({0: 2.0, 1: 1.0, 2: 2.5}))
    assert test.p_value > 0.05 and seed_test_words(test).startswith("within the spread of seeds (paired t-test by seed over 3 seeds")


@pytest.mark.algebra
@pytest.mark.parametrize(("text", "seeds"), [("3", (0, 1, 2)), ("1", (0,)), ("0,5,2", (0, 5, 2))])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.algebra
@pytest.mark.parametrize("text", ["0", "x", "1,1", "2,-1", "", "1001", str(2**63 - 1), ",".join(map(str, range(1001)))])
def test_parse_seeds_refuses(text):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)


@pytest.mark.algebra
def test_parse_seeds_names_its_limit_at_once():
    with pytest.raises(ConfigError, match="at most 1000 seeds"):
        parse_seeds(str(2**63 - 1))  # range(2^63 - 1) as a tuple would never finish
    assert len(parse_seeds("1000")) == 1000


@pytest.mark.algebra
def test_seeds_file_and_layout(tmp_path):
    assert load_seeds(tmp_path) is None
    save_seeds(tmp_path, (3, 1))
    assert load_seeds(tmp_path) == (3, 1) and is_registry_name("seeds.json") and is_registry_name("across-seeds-test-L10.json")
    for group in ("aevb", "iwae"):
        for seed in (3, 1):
            (tmp_path / group / f"seed-{seed}").mkdir(parents=True)
    assert seed_runs(tmp_path) == {group: {3: tmp_path / group / "seed-3", 1: tmp_path / group / "seed-1"} for group in ("aevb", "iwae")}
    (tmp_path / "seeds.json").write_text('{"seeds": [1, 1]}')
    with pytest.raises(RunError, match="distinct"):
        load_seeds(tmp_path)


@pytest.mark.algebra
def test_a_study_with_other_seeds_is_refused_without_overwrite(tmp_path):
    from vaelab.config import DataConfig, ExperimentConfig, TrainConfig
    from vaelab.studies.compare.run import _check_study_directory
    from vaelab.studies.compare.study import Study, algorithm_run_dir

    config = ExperimentConfig(data=DataConfig(dataset="digits"), train=TrainConfig(eval_k=10))
    Study(("aevb",), config, seeds=(0, 1)).save(tmp_path)
    assert Study.load(tmp_path).seeds == (0, 1) and algorithm_run_dir(tmp_path, "aevb", 1) == tmp_path / "aevb" / "seed-1"
    assert json.loads((tmp_path / "compare.json").read_text()).keys() == {"algorithms", "config", "curve_images"}  # as without seeds
    _check_study_directory(Study(("aevb",), config, seeds=(0, 1)), tmp_path, overwrite=False)  # the same study: continued
    with pytest.raises(RunError, match="differs in seeds"):
        _check_study_directory(Study(("aevb",), config, seeds=(0, 1, 2)), tmp_path, overwrite=False)
    with pytest.raises(RunError, match="differs in seeds"):
        _check_study_directory(Study(("aevb",), config), tmp_path, overwrite=False)


# --- the report's sentence and figure ------------------------------------------------------------


@pytest.mark.algebra
def test_sentence_tests_across_seeds_and_names_the_per_image_se():
    bounds = {"wake-sleep": across_seeds({0: -30.0, 1: -30.4, 2: -30.1}), "aevb": across_seeds({0: -27.0, 1: -27.2, 2: -27.3})}
    indices = np.arange(4)
    per_image = {"aevb": (indices, np.array([-27.0, -26.0, -28.0, -27.0])), "wake-sleep": (indices, np.array([-30.0, -29.0, -31.5, -29.5]))}
    sentence = seeds_comparison_sentence(bounds, per_image, 0, 10)
    assert sentence.startswith("AEVB is ahead of wake-sleep on test L_10 by 3.00 nats over 3 seeds, significant across seeds (paired t-test by seed")
    se = np.std([3.0, 3.0, 3.5, 2.5], ddof=1) / 2
    assert f"per-image paired SE, model fixed (seed 0): {se:.2f} nats" in sentence
    assert sentence.endswith("Mean ± sd over seeds: -27.17 ± 0.15 vs -30.17 ± 0.21.")
    close = {"wake-sleep": across_seeds({0: -30.0, 1: -27.0, 2: -29.0}), "aevb": across_seeds({0: -28.0, 1: -29.5, 2: -28.0})}
    assert "within the spread of seeds" in seeds_comparison_sentence(close, None, 0, 10)


@pytest.mark.algebra
def test_training_figure_bands_span_the_seeds():
    runs = [Series([1, 2], [-30.0, -28.0], [0.1, 0.1]), Series([1, 2], [-31.0, -27.0], [0.1, 0.1]), Series([1, 2], [-29.0, -27.5], [0.1, 0.1])]
    axes = training_curves_figure({"AEVB": {"test": runs}}, 10).axes[0]
    band = axes.collections[0].get_paths()[0].vertices[:, 1]
    assert (band.min(), band.max()) == (-31.0, -27.0)  # min-max over seeds, not standard errors
    assert np.allclose(axes.lines[0].get_ydata(), [-30.0, -27.5])  # the mean over seeds
    with_lines = training_curves_figure({"AEVB": {"test": runs}}, 10, per_seed_lines=True).axes[0]
    assert len(with_lines.lines) == 4  # a line per seed, then the mean


# --- the command line -----------------------------------------------------------------------------

TINY = ["--dataset", "digits", "--epochs", "1", "--eval-k", "10", "--hidden", "16", "--latent-dim", "2", "--no-progress", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_OFFLINE": "1"}


@pytest.mark.e2e
def test_seed_beside_seeds_is_refused(tmp_path, capsys):
    assert main(["train", *TINY, "--seeds", "2", "--seed", "3", "--out", str(tmp_path / "out")]) == 1
    assert "--seeds sets each run's seed: leave --seed out" in capsys.readouterr().err
    assert main(["train", *TINY, "--jobs", "2", "--out", str(tmp_path / "out")]) == 1
    assert "--jobs trains the seeds of --seeds at once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_other_seeds_in_a_parent_are_refused(tmp_path, capsys):
    save_seeds(tmp_path, (0, 1))
    assert main(["train", *TINY, "--seeds", "3", "--out", str(tmp_path)]) == 1
    assert "records seeds 0, 1 in seeds.json, not 0, 1, 2" in capsys.readouterr().err


def vaelab(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaelab", *arguments], env=ENV, capture_output=True, text=True, timeout=600)


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


def assert_same_run(first: Path, second: Path) -> None:
    assert comparable(read_metrics(first / "metrics.jsonl")) == comparable(read_metrics(second / "metrics.jsonl"))
    one, other = (torch.load(path / "checkpoint.pt", weights_only=True)["model"] for path in (first, second))
    assert all(torch.equal(tensor, other[name]) for name, tensor in one.items())


@pytest.mark.e2e
@pytest.mark.slow
def test_each_seed_of_parallel_jobs_is_bitwise_its_lone_run(tmp_path):
    done = vaelab("train", *TINY, "--seeds", "1,4", "--jobs", "2", "--threads", "1", "--out", str(tmp_path / "seeds"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "seeds" / "seeds.json").read_text()) == {"seeds": [1, 4]}
    for seed in (1, 4):
        lone = vaelab("train", *TINY, "--seed", str(seed), "--threads", "1", "--out", str(tmp_path / f"lone-{seed}"))
        assert lone.returncode == 0, lone.stderr
        assert_same_run(tmp_path / "seeds" / f"seed-{seed}", tmp_path / f"lone-{seed}")
    evaluated = vaelab("evaluate", str(tmp_path / "seeds"), "--k", "5", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((tmp_path / "seeds" / "across-seeds-test-L5.json").read_text())
    assert summary["groups"]["runs"]["seeds"] == [1, 4] and len(summary["groups"]["runs"]["values"]) == 2
    assert "test L_5 = " in evaluated.stdout and "(sd over 2 seeds); 95% interval [" in evaluated.stdout
    reported = vaelab("report", str(tmp_path / "seeds"))  # from saved metrics: each seed's last test evaluation in training
    assert reported.returncode == 0, reported.stderr
    final = json.loads((tmp_path / "seeds" / "across-seeds-final-test-L10.json").read_text())["groups"]["runs"]
    lone = [[row for row in read_metrics(tmp_path / f"lone-{seed}" / "metrics.jsonl") if row.get("split") == "test"][-1]["bound"] for seed in (1, 4)]
    assert final["values"] == lone and reported.stdout.startswith("checkpoint: last\nfinal test L_10 = ")


@pytest.mark.e2e
@pytest.mark.slow
def test_killed_multi_seed_run_resumes_to_the_same_result(tmp_path):
    arguments = ["train", *TINY, "--epochs", "3", "--seeds", "2", "--jobs", "1", "--threads", "1"]  # the last --epochs counts
    reference = vaelab(*arguments, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    hook = Path(__file__).parents[1] / "kill_at_event.py"  # SIGKILL at the 3rd step after seed 0's first checkpoint
    killed = subprocess.run([sys.executable, str(hook), "step", "3", *arguments, "--out", str(tmp_path / "run")], env=ENV, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "run" / "seed-1").exists()
    resumed = vaelab(*arguments, "--out", str(tmp_path / "run"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for seed in (0, 1):
        assert_same_run(tmp_path / "run" / f"seed-{seed}", tmp_path / "reference" / f"seed-{seed}")


@pytest.mark.e2e
@pytest.mark.slow
def test_three_seed_compare_writes_runs_table_and_a_sentence_over_seeds(tmp_path, capsys):
    out = tmp_path / "study"
    arguments = ["compare", *TINY, "--epochs", "2", "--curve-images", "20", "--seeds", "3", "--jobs", "2", "--threads", "1"]
    assert main([*arguments, "--out", str(out)]) == 0
    *_, sentence, written = capsys.readouterr().out.splitlines()  # after the plan
    assert written == f"report written to {out / 'report.html'}"
    assert json.loads((out / "seeds.json").read_text()) == {"seeds": [0, 1, 2]}
    for algorithm in ("wake-sleep", "aevb"):
        for seed in (0, 1, 2):
            run = out / algorithm / f"seed-{seed}"
            assert json.loads((run / "config.json").read_text())["seed"] == seed
            assert (run / "checkpoint.pt").is_file() and (run / "bound_curve.json").is_file()
    assert " over 3 seeds, " in sentence and ("paired t-test by seed over 3 seeds" in sentence or "untested across seeds" in sentence)
    assert "per-image paired SE, model fixed (seed 0)" in sentence and "Mean ± sd over seeds: " in sentence
    html = (out / "report.html").read_text()
    assert "<th>95% interval</th>" in html and "per seed (seed: value)" in html and "0: -" in html
    assert "the lowest to the highest seed (band: min-max)" in html
    assert main(["report", str(out), "--per-seed-lines"]) == 0  # rebuilt from saved results
    assert "with each seed's curve as a thin line" in (out / "report.html").read_text()
    assert main(["evaluate", str(out), "--k", "5", "--no-progress"]) == 0
    summary = json.loads((out / "across-seeds-test-L5.json").read_text())
    assert set(summary["groups"]) == {"wake-sleep", "aevb"} and summary["tests"][0]["test"] == "paired t-test by seed"


@pytest.mark.e2e
@pytest.mark.slow
def test_reproduce_with_seeds_gives_each_row_mean_and_sd_over_seeds(tmp_path, shared_data_dir):
    from vaelab.studies.reproduce.presets import get_preset
    from vaelab.studies.reproduce.run import reproduce

    preset = get_preset("kingma2013")
    report = reproduce(preset, "smoke", tmp_path, rows=["aevb"], data_dir=shared_data_dir, progress=False, seeds=(0, 1), jobs=2, threads=1)
    finals = [json.loads((tmp_path / "aevb" / f"seed-{seed}" / "final.json").read_text()) for seed in (0, 1)]
    row = report.rows[0]
    assert row["measured"] == pytest.approx(-np.mean([final["bound"] for final in finals]))
    assert row["stderr"] == pytest.approx(np.std([final["bound"] for final in finals], ddof=1))
    assert row["seeds"]["seeds"] == [0, 1]
    assert "## Over seeds 0, 1" in report.markdown.read_text()
    with pytest.raises(RunError, match="holds a reproduction with seeds 0, 1"):
        reproduce(preset, "smoke", tmp_path, rows=["aevb"], data_dir=shared_data_dir, progress=False)


@pytest.mark.algebra
def test_the_statistics_import_no_training():
    code = "import sys, vaelab.evaluation.across_seeds; assert 'vaelab.training' not in sys.modules, 'training imported'"
    assert subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True).returncode == 0


@pytest.mark.algebra
def test_a_small_lead_keeps_two_significant_digits():
    bounds = {"aevb": across_seeds({0: -27.0, 1: -27.1}), "wake-sleep": across_seeds({0: -27.0042, 1: -27.1044})}
    assert "by 0.0043 nats over 2 seeds" in seeds_comparison_sentence(bounds, None, 0, 10)


# --- report PARENT from saved metrics --------------------------------------------------------------


def fake_seed_runs(parent: Path, seeds, select_on: str | None) -> None:
    """Seed runs of a finished ``train --seeds`` with selection (``select_on``) or without, from their
    files alone: config.json and the metrics rows training writes (test L_5 at epochs 1-2; with
    selection, the best checkpoint is epoch 1 of seed 0 and epoch 2 of the others)."""
    save_seeds(parent, seeds)
    train = TrainConfig(epochs=2, eval_k=5, eval_splits=("valid", "test") if select_on else ("test",), select_on=select_on)
    for seed in seeds:
        run = parent / f"seed-{seed}"
        run.mkdir()
        ExperimentConfig(data=DataConfig(dataset="digits", valid_fraction=0.2), train=train, seed=seed).save(run / "config.json")
        for epoch in (1, 2):
            append_metrics(run / "metrics.jsonl", {"kind": "eval", "split": "test", "epoch": epoch, "k": 5, "bound": -100.0 - seed - epoch})
        if select_on:
            best = 1 if seed == 0 else 2
            append_metrics(run / "metrics.jsonl", {"kind": "selected", "split": "test", "epoch": 2, "k": 5, "bound": -50.0 - seed,
                                                   "checkpoint": "best", "checkpoint_epoch": best, "selected_on": "valid L_5"})


@pytest.mark.contract
def test_report_of_seeds_summarises_the_selected_checkpoint_and_says_so(tmp_path, capsys):
    fake_seed_runs(tmp_path, (0, 1, 2), "valid")
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("checkpoint: best on valid L_5 (epoch by seed 0: 1, 1: 2, 2: 2)\nfinal test L_5 = -51.00 ± 1.00")
    summary = json.loads((tmp_path / "across-seeds-final-test-L5.json").read_text())
    assert summary["groups"]["runs"]["values"] == [-50.0, -51.0, -52.0]  # the selected rows, not the last eval rows
    assert summary["checkpoints"] == {"runs": "best on valid L_5 (epoch by seed 0: 1, 1: 2, 2: 2)"}


@pytest.mark.contract
def test_report_of_seeds_without_selection_is_of_the_last_checkpoint(tmp_path, capsys):
    fake_seed_runs(tmp_path, (0, 1), None)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("checkpoint: last\nfinal test L_5 = -102.50 ± 0.71")


@pytest.mark.contract
def test_seeds_without_runs_are_named_not_dropped(tmp_path, capsys):
    fake_seed_runs(tmp_path, (0, 1), None)
    save_seeds(tmp_path, (0, 1, 2, 3))  # seeds 2 and 3 never started
    with pytest.raises(RunError, match=r"names seeds 0, 1, 2, 3 but seed\(s\) 2, 3 have no run yet"):
        seed_runs(tmp_path)
    assert main(["report", str(tmp_path)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("across-seeds-*"))


@pytest.mark.contract
def test_report_of_seeds_waits_for_the_parents_lock(tmp_path, capsys):
    fake_seed_runs(tmp_path, (0, 1), None)
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from vaelab.runio import directory_lock\n"
                             f"with directory_lock({str(tmp_path)!r}, 'train --seeds'):\n print(flush=True); time.sleep(60)"],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        held.stdout.readline()  # the lock is held
        assert main(["report", str(tmp_path)]) == 1
        assert "in use by" in capsys.readouterr().err
        assert not list(tmp_path.glob("across-seeds-*"))
    finally:
        held.kill()
        held.wait()


@pytest.mark.e2e
def test_overwrite_with_fewer_seeds_removes_the_old_seeds_and_summaries(tmp_path, capsys):
    fake_seed_runs(tmp_path, (0, 1, 2), None)
    for seed in (0, 1, 2):  # vaelab's runs, as train's environment.json marks them
        (tmp_path / f"seed-{seed}" / "environment.json").write_text(json.dumps({"packages": {"vaelab": "0"}}))
    (tmp_path / "seed-2" / "notes.txt").write_text("mine")
    assert main(["report", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--seeds", "1", "--jobs", "1", "--threads", "1", "--overwrite", "--out", str(tmp_path)]) == 0
    assert f"seed 0: {tmp_path / 'seed-0'}" in capsys.readouterr().out  # the plan, with --no-progress too
    assert load_seeds(tmp_path) == (0,) and not list(tmp_path.glob("across-seeds-*"))
    assert not (tmp_path / "seed-1").exists() and sorted(p.name for p in (tmp_path / "seed-2").iterdir()) == [".vaelab.lock", "notes.txt"]
    assert [row["epoch"] for row in read_metrics(tmp_path / "seed-0" / "metrics.jsonl") if row["kind"] == "train"] == [1]
