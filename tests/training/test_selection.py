"""Model selection on a validation split: best.pt, early stopping, exact resume, the seeded valid split."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelab.cli import main
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data import Split, load_dataset
from vaelab.data.splits import hold_out
from vaelab.errors import ConfigError, RunError
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.runio import read_metrics
from vaelab.training import TrainingHooks, train

# A tiny model overfitting 20 digits at a high learning rate: its valid L_5 peaks at epoch 3 of 8
# (measured: -81.1, -38.2, -31.4, -33.1, -35.0, ...), so the best checkpoint is not the last.
EPOCHS = 8


def overfitting_config(epochs=EPOCHS, patience=None, **data_options) -> ExperimentConfig:
    return ExperimentConfig(
        data=DataConfig(dataset="digits", valid_fraction=0.2, **data_options),
        model=ModelConfig(latent_dim=8, hidden=(128,)),
        train=TrainConfig(
            epochs=epochs, batch_size=10, learning_rate=0.2, train_size=20, eval_every=1, eval_k=5,
            eval_splits=("valid", "test"), select_on="valid", patience=patience,
        ),
        seed=0,
    )


def comparable(rows):
    """Metrics rows without the fields that measure wall-clock time."""
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


def rows_of(metrics, kind, split=None):
    return [row for row in metrics if row["kind"] == kind and (split is None or row["split"] == split)]


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run with selection (no patience)."""
    return train(overfitting_config(), tmp_path_factory.mktemp("reference") / "run", progress=False)


@pytest.mark.e2e
def test_best_checkpoint_is_the_argmax_of_the_valid_rows(reference):
    valid = rows_of(reference.metrics, "eval", "valid")
    assert [row["epoch"] for row in valid] == list(range(1, EPOCHS + 1))
    best = max(valid, key=lambda row: row["bound"])
    assert 1 < best["epoch"] < EPOCHS  # the bound peaked mid-training: last is not best
    saved = load(reference.run_dir / "best.pt")
    assert saved["epoch"] == best["epoch"] and saved["bound"] == best["bound"] and saved["selected_on"] == "valid L_5"
    assert any(not torch.equal(tensor, load(reference.run_dir / "checkpoint.pt")["model"][name]) for name, tensor in saved["model"].items())
    assert load(reference.run_dir / "checkpoint.pt")["selection"] == {"best_epoch": best["epoch"], "best_bound": best["bound"], "stale": EPOCHS - best["epoch"], "stopped": False}


@pytest.mark.e2e
def test_final_rows_say_which_checkpoint_they_are_of(reference):
    valid = rows_of(reference.metrics, "eval", "valid")
    best_epoch = max(valid, key=lambda row: row["bound"])["epoch"]
    assert {row["checkpoint"] for row in rows_of(reference.metrics, "eval")} == {"last"}
    selected = rows_of(reference.metrics, "selected")
    assert [row["split"] for row in selected] == ["valid", "test"]
    for row in selected:
        of_best_epoch = next(r for r in rows_of(reference.metrics, "eval", row["split"]) if r["epoch"] == best_epoch)
        assert row["epoch"] == EPOCHS and row["checkpoint"] == "best" and row["checkpoint_epoch"] == best_epoch
        assert row["selected_on"] == "valid L_5" and row["bound"] == of_best_epoch["bound"]


@pytest.mark.e2e
def test_evaluate_reads_best_by_default_and_last_on_request(reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference.run_dir, run)
    valid = rows_of(reference.metrics, "eval", "valid")
    best = max(valid, key=lambda row: row["bound"])
    # the best checkpoint, with the draws of its epoch's evaluation: the same number
    row = evaluate_run(run, 5, "valid", device="cpu")
    assert (row["epoch"], row["checkpoint"], row["selected_on"], row["bound"]) == (best["epoch"], "best", "valid L_5", best["bound"])
    row = evaluate_run(run, 5, "valid", device="cpu", checkpoint="last")
    assert (row["epoch"], row["checkpoint"], row["bound"]) == (EPOCHS, "last", valid[-1]["bound"])
    assert main(["evaluate", str(run), "--k", "5", "--split", "valid", "--no-progress", "--device", "cpu"]) == 0
    assert f"epoch {best['epoch']}" in capsys.readouterr().out.split("\n")[0]
    assert main(["evaluate", str(run), "--k", "5", "--no-progress", "--device", "cpu"]) == 0
    assert "checkpoint: best on valid L_5" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--k", "5", "--checkpoint", "last", "--no-progress", "--device", "cpu"]) == 0
    assert "checkpoint: last" in capsys.readouterr().out


@pytest.mark.e2e
def test_best_of_a_run_without_selection_is_refused_in_one_line(tmp_path, capsys):
    config = dataclasses.replace(overfitting_config(epochs=1), train=TrainConfig(epochs=1, eval_k=5, eval_splits=("test",)))
    train(config, tmp_path / "run", progress=False)
    assert main(["evaluate", str(tmp_path / "run"), "--k", "5", "--checkpoint", "best", "--no-progress"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "trained without --select-on" in error and "best.pt" in error
    with pytest.raises(RunError, match="no best checkpoint"):
        evaluate_run(tmp_path / "run", 5, checkpoint="best")


@pytest.mark.e2e
def test_a_run_with_selection_killed_before_its_first_evaluation_has_no_best_yet(tmp_path):
    config = overfitting_config(epochs=1)
    train(config, tmp_path / "run", progress=False)
    (tmp_path / "run" / "best.pt").unlink()  # as after a kill between the first checkpoint and the first evaluation
    with pytest.raises(RunError, match="no best checkpoint yet .*--checkpoint last"):
        evaluate_run(tmp_path / "run", 5)
    assert evaluate_run(tmp_path / "run", 5, checkpoint="last")["checkpoint"] == "last"


@pytest.mark.e2e
def test_patience_stops_at_the_right_evaluation_and_a_resume_does_not_train_on(reference, tmp_path):
    patience = 2
    valid = rows_of(reference.metrics, "eval", "valid")
    best, stale, stop_epoch = float("-inf"), 0, None  # the protocol by hand on the uninterrupted run's valid bounds
    for row in valid:
        stale = 0 if row["bound"] > best else stale + 1
        best = max(best, row["bound"])
        if stale == patience:
            stop_epoch = row["epoch"]
            break
    assert stop_epoch is not None and stop_epoch < EPOCHS

    run = tmp_path / "run"
    result = train(overfitting_config(patience=patience), run, progress=False)
    assert max(row["epoch"] for row in result.metrics) == stop_epoch
    assert comparable(rows_of(result.metrics, "eval")) == comparable([r for r in rows_of(reference.metrics, "eval") if r["epoch"] <= stop_epoch])
    (stop,) = rows_of(result.metrics, "stop")
    assert (stop["epoch"], stop["patience"], stop["best_epoch"]) == (stop_epoch, patience, stop_epoch - patience)
    assert [row["checkpoint_epoch"] for row in rows_of(result.metrics, "selected")] == [stop_epoch - patience] * 2
    assert load(run / "checkpoint.pt")["selection"]["stopped"] is True
    assert load(run / "best.pt")["epoch"] == stop_epoch - patience

    before = (run / "metrics.jsonl").read_bytes(), load(run / "checkpoint.pt")["epoch"], (run / "config.json").read_bytes()
    train(overfitting_config(epochs=EPOCHS + 4, patience=patience), run, resume=True, progress=False)
    assert ((run / "metrics.jsonl").read_bytes(), load(run / "checkpoint.pt")["epoch"], (run / "config.json").read_bytes()) == before


# best.pt of epoch 1 or 2 not written; epoch 1's written and its checkpoint not (no checkpoint yet); mid-run, past the best
@pytest.mark.parametrize("file, epoch", [("best.pt", 1), ("best.pt", 2), ("checkpoint.pt", 1), ("checkpoint.pt", 3), ("checkpoint.pt", 5)])
@pytest.mark.e2e
def test_a_crash_at_any_save_resumes_to_the_uninterrupted_run(tmp_path, file, epoch):
    patience = 3
    uninterrupted = train(overfitting_config(patience=patience), tmp_path / "reference", progress=False)

    def crash(path, state):
        if path.name == file and state["epoch"] == epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(overfitting_config(patience=patience), tmp_path / "crashed", progress=False, hooks=TrainingHooks(on_checkpoint=crash))
    resumed = train(overfitting_config(patience=patience), tmp_path / "crashed", resume=True, progress=False)
    assert comparable(resumed.metrics) == comparable(uninterrupted.metrics)
    for name in ("best.pt", "checkpoint.pt"):
        expected, got = load(tmp_path / "reference" / name), load(tmp_path / "crashed" / name)
        assert_same_state(expected["model"], got["model"])
        assert (got["epoch"], got.get("selection")) == (expected["epoch"], expected.get("selection"))


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_at_events_then_resume_equals_uninterrupted_run(tmp_path):
    """Killed through the CLI at steps, evaluations and file syncs (best.pt's included), then resumed."""
    arguments = ["train", "--dataset", "digits", "--valid-fraction", "0.2", "--latent-dim", "8", "--hidden", "128", "--epochs", str(EPOCHS),
                 "--batch-size", "10", "--lr", "0.2", "--train-size", "20", "--eval-every", "1", "--eval-k", "5",
                 "--eval-splits", "valid,test", "--select-on", "valid", "--patience", "3", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_OFFLINE": "1"}
    hook = Path(__file__).parents[1] / "kill_at_event.py"
    assert subprocess.run([sys.executable, "-m", "vaelab", *arguments, "--out", str(tmp_path / "reference")], env=env, capture_output=True, check=False).returncode == 0
    run, killed = tmp_path / "killed", 0
    for kind, count in [("fsync", 1), ("fsync", 2), ("step", 1), ("evaluation", 2), ("fsync", 3), ("fsync", 2)]:
        process = subprocess.run([sys.executable, str(hook), kind, str(count), *arguments, "--out", str(run), "--resume"], env=env, capture_output=True, check=False)
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.decode()
        killed += process.returncode == -signal.SIGKILL
    finisher = subprocess.run([sys.executable, "-m", "vaelab", *arguments, "--out", str(run), "--resume"], env=env, capture_output=True, check=False)
    assert finisher.returncode == 0, finisher.stderr.decode()
    assert killed >= 4
    assert comparable(read_metrics(run / "metrics.jsonl")) == comparable(read_metrics(tmp_path / "reference" / "metrics.jsonl"))
    for name in ("best.pt", "checkpoint.pt"):
        assert_same_state(load(tmp_path / "reference" / name)["model"], load(run / name)["model"])


@pytest.mark.algebra
def test_the_valid_split_is_seeded_and_disjoint_from_train_and_test():
    full = load_dataset("digits")
    held = load_dataset("digits", valid_fraction=0.2, split_seed=5)
    again = load_dataset("digits", valid_fraction=0.2, split_seed=5)
    other = load_dataset("digits", valid_fraction=0.2, split_seed=6)
    train, valid = held.splits["train"], held.splits["valid"]
    assert len(valid.images) == round(0.2 * len(full.splits["train"].images))
    assert len(train.images) + len(valid.images) == len(full.splits["train"].images)
    assert torch.equal(held.splits["test"].images, full.splits["test"].images)  # the test split is untouched
    assert torch.equal(valid.images, again.splits["valid"].images) and not torch.equal(valid.images, other.splits["valid"].images)
    assert torch.equal(torch.cat([train.labels, valid.labels]).bincount(), full.splits["train"].labels.bincount())  # labels follow

    # disjoint by index: the same draw on a split whose "images" are their own indices
    indices = Split(torch.arange(1497.0)[:, None], None)
    drawn = hold_out({"train": indices, "test": indices}, "valid", 0.2, 5, "indices")
    train_index, valid_index = (set(drawn[name].images[:, 0].tolist()) for name in ("train", "valid"))
    assert not train_index & valid_index and train_index | valid_index == set(range(1497))
    chosen = {tuple(row.tolist()) for row in full.splits["train"].images[sorted(int(i) for i in valid_index)]}
    assert chosen == {tuple(row.tolist()) for row in valid.images}  # digits' valid split is that draw


@pytest.mark.algebra
def test_the_valid_split_of_data_by_path_is_held_out_after_the_test_split(tmp_path):
    import numpy as np

    images = (np.arange(100 * 4, dtype=np.float32) / 400).reshape(100, 2, 2)  # every image distinct
    np.savez(tmp_path / "data.npz", train=images)
    dataset = load_dataset(str(tmp_path / "data.npz"), test_fraction=0.1, valid_fraction=0.25, split_seed=1)
    sets = {name: {tuple(row.tolist()) for row in split.images} for name, split in dataset.splits.items()}
    assert [len(sets[name]) for name in ("train", "valid", "test")] == [68, 22, 10]
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    np.savez(tmp_path / "with_valid.npz", train=images, valid=images[:5])
    with pytest.raises(ConfigError, match="has its own valid split; leave --valid-fraction at 0"):
        load_dataset(str(tmp_path / "with_valid.npz"), valid_fraction=0.1)


@pytest.mark.e2e
def test_select_on_valid_without_a_valid_split_is_refused_before_anything_is_written(tmp_path, capsys):
    options = ["train", "--dataset", "digits", "--epochs", "1", "--eval-k", "5", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*options, "--eval-splits", "valid,test", "--select-on", "valid"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no valid split" in error and "--valid-fraction" in error
    assert main([*options, "--select-on", "valid"]) != 0  # the valid split not evaluated
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--eval-splits" in error
    assert main([*options, "--patience", "2"]) != 0
    assert "--select-on" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="own valid split"):
        train(dataclasses.replace(overfitting_config(), data=DataConfig(dataset="binarized-mnist", valid_fraction=0.1)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.contract
def test_compare_refuses_select_on_before_anything_is_written(tmp_path, capsys):
    # compare reports each algorithm's last checkpoint: best.pt would disagree with its saved curve forever
    options = ["compare", "--dataset", "digits", "--valid-fraction", "0.2", "--eval-splits", "valid,test", "--epochs", "1", "--no-progress",
               "--out", str(tmp_path / "study")]
    for selection in (["--select-on", "valid"], ["--select-on", "valid", "--patience", "2"]):
        assert main([*options, *selection]) != 0
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "leave out --select-on and --patience" in error and "vaelab train --select-on" in error
    assert not (tmp_path / "study").exists()


@pytest.mark.e2e
def test_tensorboard_logs_an_early_stopped_run(tmp_path):
    pytest.importorskip("tensorboard")
    result = train(overfitting_config(patience=1), tmp_path / "run", progress=False, tensorboard=True)
    assert rows_of(result.metrics, "stop") and list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.e2e
def test_the_config_records_the_valid_split(tmp_path):
    config = overfitting_config(epochs=1, split_seed=4)
    train(config, tmp_path / "run", progress=False)
    saved = ExperimentConfig.load(tmp_path / "run" / "config.json")
    assert (saved.data.valid_fraction, saved.data.split_seed, saved.train.select_on) == (0.2, 4, "valid")


@pytest.mark.contract
def test_evaluate_settings_take_the_checkpoint_choices_without_the_model_builders():
    code = "import sys, vaelab.evaluation.settings; assert 'vaelab.builders' not in sys.modules, 'builders imported'"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
