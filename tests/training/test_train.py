"""Training runs on the embedded digits: files written, metrics sane, resume exact."""

from __future__ import annotations

import dataclasses
import json
from importlib import metadata

import pytest
import torch

from vaelab import training as train_module
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import RunError
from vaelab.runio import read_metrics
from vaelab.training import TrainingHooks, train


def small_config(algorithm="aevb", epochs=3, **train_options) -> ExperimentConfig:
    return ExperimentConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(latent_dim=2, hidden=(32,)),
        train=TrainConfig(algorithm=algorithm, epochs=epochs, eval_every=2, eval_k=20, **train_options),
        seed=3,
    )


def comparable(rows):
    """Metrics rows without the fields that measure wall-clock time."""
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


@pytest.mark.parametrize("algorithm", ["aevb", "wake-sleep"])
@pytest.mark.e2e
def test_train_writes_config_environment_metrics_and_checkpoint(tmp_path, algorithm):
    result = train(small_config(algorithm), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert ExperimentConfig.load(run / "config.json") == small_config(algorithm)
    environment = json.loads((run / "environment.json").read_text())
    assert environment["packages"]["torch"] == metadata.version("torch")
    assert environment["data_files_sha256"] == {}  # digits reads no files
    assert (run / "checkpoint.pt").exists()
    rows = read_metrics(run / "metrics.jsonl")
    assert rows == result.metrics
    assert [row["epoch"] for row in rows if row["kind"] == "train"] == [1, 2, 3]
    evaluations = [row for row in rows if row["kind"] == "eval"]
    assert [(row["epoch"], row["split"]) for row in evaluations] == [(2, "train"), (2, "test"), (3, "train"), (3, "test")]
    for row in evaluations:
        assert row["k"] == 20 and row["algorithm"] == algorithm
        assert row["elbo"] <= row["bound"] + 3 * row["bound_stderr"]  # L_1 <= L_20, up to noise
        assert row["bound"] < 0 and row["bound_stderr"] > 0


@pytest.mark.e2e
def test_bf16_training_is_recorded_and_evaluates_in_fp32(tmp_path):
    rows = train(small_config("aevb", epochs=2, precision="bf16"), tmp_path, progress=False).metrics
    assert ExperimentConfig.load(tmp_path / "config.json").train.precision == "bf16"
    fp32_rows = train(small_config("aevb", epochs=2), tmp_path / "fp32", progress=False).metrics
    evaluations = [row for row in rows if row["kind"] == "eval"]
    assert evaluations and all("precision" not in row for row in evaluations)  # evaluation rows are fp32 ones
    # same seed, same samples: bf16 matmuls change the trained model a little, not much
    for reduced, full in zip(evaluations, [row for row in fp32_rows if row["kind"] == "eval"]):
        assert reduced["bound"] != full["bound"] and abs(reduced["bound"] - full["bound"]) < 0.1


@pytest.mark.e2e
def test_training_improves_the_bound(tmp_path):
    rows = train(small_config("aevb", epochs=6), tmp_path, progress=False).metrics
    test_rows = [row["bound"] for row in rows if row["kind"] == "eval" and row["split"] == "test"]
    assert test_rows[-1] > test_rows[0]


@pytest.mark.e2e
def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    train(small_config(epochs=1), tmp_path, progress=False)
    with pytest.raises(RunError, match="--resume"):
        train(small_config(epochs=1), tmp_path, progress=False)


@pytest.mark.e2e
def test_resume_refuses_a_different_config_and_names_the_keys(tmp_path):
    train(small_config(epochs=1), tmp_path, progress=False)
    changed = small_config(epochs=1, learning_rate=0.01, batch_size=50)
    with pytest.raises(RunError, match=r"train\.batch_size, train\.learning_rate"):
        train(changed, tmp_path, resume=True, progress=False)


@pytest.mark.e2e
def test_crash_between_metrics_and_checkpoint_resumes_bitwise_equal(tmp_path):
    reference = train(small_config(epochs=4), tmp_path / "reference", progress=False)

    # Crash while writing epoch 2's checkpoint: its metrics rows are already on disk.
    def crash_at_epoch_2(path, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_config(epochs=4), tmp_path / "crashed", progress=False, hooks=TrainingHooks(on_checkpoint=crash_at_epoch_2))
    assert torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)["epoch"] == 1

    resumed = train(small_config(epochs=4), tmp_path / "crashed", resume=True, progress=False)
    assert comparable(resumed.metrics) == comparable(reference.metrics)  # no duplicated rows
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


@pytest.mark.e2e
def test_extending_a_finished_run_continues_it(tmp_path):
    reference = train(small_config(epochs=4), tmp_path / "reference", progress=False)
    train(small_config(epochs=2), tmp_path / "extended", progress=False)
    extended = train(small_config(epochs=4), tmp_path / "extended", resume=True, progress=False)
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, extended.model.state_dict()[name]), name


@pytest.mark.e2e
def test_non_finite_loss_stops_with_last_checkpoint_intact(tmp_path):
    train(small_config(epochs=1), tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def poisoned(objective):
        def call(model, x, generator, **step):
            output = objective(model, x, generator, **step)
            return type(output)(output.bound, output.theta_surrogate * float("nan"), output.phi_surrogate)

        return call

    with pytest.raises(train_module.NumericalError, match=r"epoch 2, batch 0: the theta surrogate is NaN"):
        train(small_config(epochs=2), tmp_path, resume=True, progress=False, hooks=TrainingHooks(wrap_objective=poisoned))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("levels, draw", [(None, "binarize"), (None, None), (17, "binarize"), (17, None), (256, "dequantize")])
@pytest.mark.algebra
def test_epoch_buffers_draw_what_fresh_tensors_drew_epoch_after_epoch(levels, draw):
    # Before the buffers, each epoch was binarize(grey, 'dynamic', g), then randperm, then a gather:
    # two epochs through the reused buffers give those very images and orders (non-contiguous input too),
    # uint8 levels binarized as their grey values v / (levels - 1) would be, and dequantized afresh each epoch.
    from types import SimpleNamespace

    from vaelab.data import to_unit_interval
    from vaelab.data.binarize import binarize
    from vaelab.data.levels import dequantize

    grey = torch.rand(784, 300, generator=torch.Generator().manual_seed(1)).T  # [300, 784], not contiguous
    images = grey if levels is None else (grey * (levels - 1)).round().to(torch.uint8)
    epochs = train_module._EpochImages(images, levels, draw)
    drawn, expected = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    seen = []
    for _ in range(2):
        order, shuffled = epochs.draw(drawn)
        if draw == "binarize":
            epoch = binarize(to_unit_interval(images, levels), "dynamic", expected)
        else:
            epoch = dequantize(images, levels, expected) if draw == "dequantize" else to_unit_interval(images, levels)
        expected_order = torch.randperm(300, generator=expected)
        assert torch.equal(order, expected_order) and torch.equal(to_unit_interval(shuffled, levels), epoch[expected_order])
        assert shuffled.data_ptr() == epochs.shuffled.data_ptr()  # no new memory
        batch = epochs.batch(40, 100, SimpleNamespace(rank=1, world_size=2, device=torch.device("cpu")))
        assert batch.dtype == torch.float32 and torch.equal(batch, epoch[expected_order][40:140][1::2])  # process 1 of 2
        seen.append(epoch)
    assert shuffled.dtype == (torch.uint8 if levels and not draw else torch.float32)  # levels stay uint8 unless drawn over
    if draw == "binarize":
        assert set(shuffled.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(seen[0], seen[1]) == (draw is None)  # every draw is fresh each epoch


@pytest.mark.e2e
def test_static_and_threshold_binarization_train(tmp_path):
    for mode in ("static", "threshold", "none"):
        config = ExperimentConfig(
            data=DataConfig(dataset="digits", binarization=mode),
            model=ModelConfig(hidden=(16,)),
            train=TrainConfig(epochs=1, eval_k=5),
        )
        rows = train(config, tmp_path / mode, progress=False).metrics
        assert all(torch.isfinite(torch.tensor(row["bound"])) for row in rows)


@pytest.mark.e2e
def test_resume_refuses_fewer_epochs_than_already_trained(tmp_path):
    train(small_config(epochs=3), tmp_path, progress=False)
    with pytest.raises(RunError, match="already trained for 3 epochs"):
        train(small_config(epochs=2), tmp_path, resume=True, progress=False)


def poisoned_gradient(at_call: int) -> TrainingHooks:
    """Hooks that wrap the objective so that its theta gradient (not its surrogate) is NaN on the
    minibatch of call ``at_call``, and on it again when a replay meets it: 0 * sqrt(u) at u = 0 has
    the value 0 and the derivative 0 * inf = NaN."""

    def poisoned(objective):
        calls = []

        def call(model, x, generator, **step):
            output = objective(model, x, generator, **step)
            calls.append(x.clone() if len(calls) + 1 == at_call else None)
            target = calls[at_call - 1] if len(calls) >= at_call else None
            if target is None or not torch.equal(x, target):
                return output
            bias = model.generative.logits.bias
            poison = 0 * torch.sqrt(bias.sum() - bias.sum())
            return type(output)(output.bound, output.theta_surrogate + poison, output.phi_surrogate + poison)

        return call

    return TrainingHooks(wrap_objective=poisoned)


@pytest.mark.parametrize("algorithm, batch", [("aevb", 74), ("wake-sleep", 7)])
@pytest.mark.e2e
def test_non_finite_gradient_inside_a_window_is_named_by_its_batch(tmp_path, algorithm, batch):
    # digits: 1497 training images, batch 20, so 75 steps an epoch, checked after steps 49 and 74.
    # aevb, batch 74: the epoch's last step, its loss finite; only the parameters Adam moved show the fault.
    # wake-sleep, batch 7: the next step dreams from Bernoulli(NaN) and raises; the fault is named all the same.
    train(small_config(algorithm, epochs=1, batch_size=20), tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(train_module.NumericalError, match=rf"epoch 2, batch {batch}: the theta gradient is not finite; .*epoch 1 intact"):
        train(small_config(algorithm, epochs=2, batch_size=20), tmp_path, resume=True, progress=False, hooks=poisoned_gradient(at_call=batch + 1))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.algebra
def test_adam_carries_a_non_finite_gradient_into_its_parameter(fused, bad):
    """The window check reads parameters, not gradients: it rests on this (NaN then stays)."""
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], fused=fused)
    for gradient in (torch.tensor([1.0, bad, 1.0]), torch.ones(3), torch.ones(3)):
        parameter.grad = gradient
        optimizer.step()
    assert torch.isnan(parameter[1]) and torch.isfinite(parameter[[0, 2]]).all()


@pytest.mark.e2e
def test_a_fault_in_the_first_window_of_a_fresh_run_is_named(tmp_path):
    """The window was saved before Adam's first step: the replay starts Adam afresh and meets the fault again."""
    with pytest.raises(train_module.NumericalError, match=r"epoch 1, batch 3: the theta gradient is not finite; .*epoch 0 intact"):
        train(small_config("aevb", epochs=1, batch_size=20), tmp_path, progress=False, hooks=poisoned_gradient(at_call=4))


@pytest.mark.algebra
def test_a_window_restores_what_it_saved_into_the_same_tensors():
    """Saved before Adam's first step and after it: restore gives back the parameters, Adam's state
    (none, then the moments and step) and the noise generator, bit for bit; the copies are reused."""
    from types import SimpleNamespace

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    loop = SimpleNamespace(model=model, optimizer=optimizer, parameters=list(model.parameters()), noise_generator=torch.Generator().manual_seed(0))

    def steps(count):
        for _ in range(count):
            model(torch.randn(4, 3, generator=loop.noise_generator)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()

    def state():
        return {**{name: tensor.clone() for name, tensor in model.state_dict().items()},
                **{f"adam{index}.{key}": value.clone() for index, parameter in enumerate(loop.parameters)
                   for key, value in optimizer.state.get(parameter, {}).items()},
                "noise": loop.noise_generator.get_state()}

    window = train_module._Window(loop)
    for saved_after in (0, 3):
        steps(saved_after)
        window.save(first_batch=0)
        before, storages = state(), [tensor.data_ptr() for tensor in window.copies]
        steps(2)
        window.restore()
        after = state()
        assert before.keys() == after.keys() and len(before) == (3 if saved_after == 0 else 9)
        assert all(torch.equal(before[key], after[key]) for key in before)
        window.save(first_batch=0)
        assert saved_after == 0 or [tensor.data_ptr() for tensor in window.copies] == storages


@pytest.mark.e2e
def test_a_fault_after_a_mid_epoch_save_is_replayed_from_that_save(tmp_path):
    """Saves every 10 steps, checks every 5: a fault at batch 23 is found at the check after batch 24
    and replayed from the save at batch 20, so the replay starts from a state saved after Adam's steps."""
    replayed_from = []
    hooks = dataclasses.replace(poisoned_gradient(at_call=24), check_every=5, save_every=10, on_replay=replayed_from.append)
    with pytest.raises(train_module.NumericalError, match=r"epoch 1, batch 23: the theta gradient is not finite"):
        train(small_config("aevb", epochs=1, batch_size=20), tmp_path, progress=False, hooks=hooks)
    assert replayed_from == [20]
