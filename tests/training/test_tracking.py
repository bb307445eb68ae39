"""TensorBoard logging (--tensorboard): scalars of every row and image grids, no change to the numbers,
one line when the package is missing."""

from __future__ import annotations

import pytest

from vaelab import tracking
from vaelab.cli import main
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.training import train

pytestmark = pytest.mark.e2e

CONFIG = ExperimentConfig(
    data=DataConfig(dataset="digits"),
    model=ModelConfig(latent_dim=2, hidden=(16,)),
    train=TrainConfig(epochs=2, eval_every=2, eval_k=5, eval_train_size=100),
    seed=1,
)


class FakeWriter:
    """Records what a SummaryWriter is asked to write."""

    instances: list["FakeWriter"] = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.images = log_dir, [], []
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_images(self, tag, images, step):
        self.images.append((tag, tuple(images.shape), step, float(images.min()), float(images.max())))

    def flush(self):
        pass

    def close(self):
        pass


def test_rows_and_grids_are_logged_and_the_numbers_do_not_change(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_summary_writer_class", lambda: FakeWriter)
    logged = train(CONFIG, tmp_path / "logged", progress=False, tensorboard=True)
    plain = train(CONFIG, tmp_path / "plain", progress=False)
    drop = lambda rows: [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]  # noqa: E731
    assert drop(logged.metrics) == drop(plain.metrics)
    writer = FakeWriter.instances[-1]
    assert writer.log_dir == str(tmp_path / "logged" / "tensorboard")
    steps = {row["epoch"]: row["step"] for row in logged.metrics}
    expected = [("train/bound", row["bound"], row["step"]) for row in logged.metrics if row["kind"] == "train"]
    for row in logged.metrics:
        if row["kind"] == "eval":
            expected += [(f"{row['split']}/L_5", row["bound"], row["step"]), (f"{row['split']}/elbo", row["elbo"], row["step"])]
            # binarized digits are binary data: bits/dim beside the nats
            expected += [(f"{row['split']}/L_5_bits_per_dim", row["bound_bpd"], row["step"]), (f"{row['split']}/elbo_bits_per_dim", row["elbo_bpd"], row["step"])]
    assert sorted(writer.scalars) == sorted(expected)
    assert [(tag, shape, step) for tag, shape, step, _, _ in writer.images] == [
        ("samples", (16, 1, 8, 8), steps[2]), ("reconstructions", (32, 1, 8, 8), steps[2])
    ]
    assert all(0 <= low and high <= 1 for *_, low, high in writer.images)


def test_missing_tensorboard_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    def missing():
        raise tracking.ConfigError("--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]' (or pip install tensorboard)")

    monkeypatch.setattr(tracking, "_summary_writer_class", missing)
    status = main(["train", "--epochs", "1", "--hidden", "8", "--no-progress", "--tensorboard", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1 and "pip install 'vaelab[tensorboard]'" in error, error
    assert not (tmp_path / "run").exists()


def test_event_files_hold_the_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra, not installed here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(CONFIG, tmp_path, progress=False, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    test_row = [row for row in result.metrics if row["kind"] == "eval" and row["split"] == "test"][-1]
    assert {"train/bound", "test/L_5", "test/elbo", "train/L_5"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/L_5")[-1].value == pytest.approx(test_row["bound"], rel=1e-6)
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
