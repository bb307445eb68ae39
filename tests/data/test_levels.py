"""Discrete data (vaelab.data.levels, vaelab.evaluation.protocol): the levels each loader reports,
uint8 storage, --bits, dequantization of training and evaluation images, and the CIFAR-10 archive
(read from a small synthetic tar.gz laid out like the real one; no test touches the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from conftest import TINY, one_line_error, run_cli
from test_datasets import assert_one_line, use_tiny_spec, write
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig
from vaelab.data import binarize, datasets, load_dataset, to_unit_interval
from vaelab.data.levels import dequantize, reduce_bits
from vaelab.data.user import dataset_from_arrays
from vaelab.errors import ConfigError, DataError
from vaelab.evaluation.protocol import SPLIT_TAGS, epoch_draw, evaluation_images, seeded_generator, training_images

CIFAR_RECORD = 1 + 3 * 32 * 32
TOP_UNIFORM = 1 - 2**-24  # the largest float32 below 1, the largest u torch.rand draws


def config_of(likelihood: str = "auto", **data) -> ExperimentConfig:
    return ExperimentConfig(data=DataConfig(**data), model=ModelConfig(likelihood=likelihood))


def assert_in_bins(values: torch.Tensor, levels_: torch.Tensor, levels: int) -> None:
    """Each value lies in its level's bin [v / levels, (v + 1) / levels)."""
    v = levels_.to(torch.float32)
    assert values.dtype == torch.float32
    assert ((v / levels <= values) & (values < (v + 1) / levels)).all()


# ---------------------------------------------------------------- levels and storage


@pytest.mark.algebra
def test_user_data_levels_follow_their_dtype():
    rng = np.random.default_rng(0)
    eight_bit = dataset_from_arrays(rng.integers(0, 256, (10, 4, 4), dtype=np.uint8))
    boolean = dataset_from_arrays(rng.random((10, 4, 4)) < 0.5)
    zero_one = dataset_from_arrays(rng.integers(0, 2, (10, 16)))  # int64 0/1 vectors
    floats = dataset_from_arrays(rng.random((10, 4, 4)).astype(np.float32), likelihood="gaussian")
    assert (eight_bit.levels, boolean.levels, zero_one.levels, floats.levels) == (256, 2, 2, None)
    assert [d.splits["train"].images.dtype for d in (eight_bit, boolean, zero_one, floats)] == [torch.uint8] * 3 + [torch.float32]
    assert boolean.is_binary and zero_one.is_binary and not eight_bit.is_binary
    assert torch.equal(zero_one.unit_images("train"), zero_one.splits["train"].images.float())  # levels 0, 1 -> 0.0, 1.0
    with pytest.raises(DataError) as err:
        dataset_from_arrays(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), test=rng.random((2, 4, 4)))
    assert assert_one_line(err) == "arrays: test images hold continuous values, train images 256 levels; give every split one dtype"


@pytest.mark.algebra
def test_a_colour_npz_loads_as_8bit_with_three_channels(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "colour.npz", train=images)
    dataset = load_dataset(str(tmp_path / "colour.npz"), test_fraction=0.34)
    assert (dataset.levels, dataset.channels, dataset.data_shape) == (256, 3, (3, 32, 32))
    rows = torch.cat([split.images for split in dataset.splits.values()])
    assert rows.dtype == torch.uint8 and rows.shape == (6, 3072)
    # channels first: a row's first 1024 values are the red plane of one image
    assert sorted(map(tuple, rows[:, :1024].tolist())) == sorted(map(tuple, images[..., 0].reshape(6, 1024).tolist()))


@pytest.mark.algebra
def test_unit_interval_is_v_over_levels_minus_one_and_leaves_floats_alone():
    v = torch.tensor([[0, 1, 8, 16]], dtype=torch.uint8)
    assert torch.equal(to_unit_interval(v, 17), torch.tensor([[0.0, 1 / 16, 0.5, 1.0]]))
    floats = torch.tensor([[0.25, 0.5]])
    assert to_unit_interval(floats, None) is floats


# ---------------------------------------------------------------- --bits


@pytest.mark.algebra
@pytest.mark.parametrize("bits", range(1, 9))
def test_bits_keep_the_top_bits_of_8bit_values(bits):
    values = np.array([[0, 1, 63, 64, 127, 128, 200, 255]] * 2, dtype=np.uint8)
    dataset = reduce_bits(dataset_from_arrays(values, test=values), bits)
    expected = torch.from_numpy(values >> (8 - bits))
    assert torch.equal(dataset.splits["train"].images, expected) and torch.equal(dataset.splits["test"].images, expected)
    assert dataset.levels == 2**bits and dataset.is_binary == (bits == 1)
    assert dataset.unit_images("train").max() == 1  # 255 stays the top level


@pytest.mark.algebra
def test_bits_need_8bit_data(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("digits", bits=4)
    assert assert_one_line(err) == "--bits needs 8-bit images; digits has 17 levels"
    with pytest.raises(DataError, match="; floats has continuous values$"):
        reduce_bits(dataset_from_arrays(np.full((4, 2, 2), 0.5), name="floats"), 4)
    np.savez(tmp_path / "grey.npz", train=np.arange(40, dtype=np.uint8).reshape(10, 2, 2) * 6)
    assert load_dataset(str(tmp_path / "grey.npz"), bits=2).levels == 4  # data by path too
    for bad in (0, 9):
        with pytest.raises(ConfigError, match="bits must be an integer from 1 to 8"):
            DataConfig(bits=bad)


@pytest.mark.e2e
def test_bits_train_from_the_command_line_and_are_recorded(tmp_path):
    np.savez(tmp_path / "grey.npz", train=np.random.default_rng(2).integers(0, 256, (60, 4, 4), dtype=np.uint8))
    tiny = [arg for arg in TINY if arg not in ("--dataset", "digits", "--eval-train-size", "100")]
    status, _, stderr = run_cli("train", *tiny, "--dataset", tmp_path / "grey.npz", "--bits", "3", "--epochs", "1", "--out", tmp_path / "run")
    assert status == 0, stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["bits"] == 3
    status, _, stderr = run_cli("train", *TINY, "--bits", "3", "--epochs", "1", "--out", tmp_path / "digits")
    one_line_error(status, stderr)
    assert "--bits needs 8-bit images; digits has 17 levels" in stderr
    assert not (tmp_path / "digits").exists(), "a named dataset's --bits is refused before anything is written"
    assert "writing" not in stderr


# ---------------------------------------------------------------- what the model sees


@pytest.mark.algebra
def test_evaluation_dequantization_is_one_fixed_draw_in_each_bin():
    config = config_of("gaussian")
    first, again = load_dataset("digits"), load_dataset("digits")
    test = evaluation_images(config, first, "test")[0]
    assert torch.equal(test, evaluation_images(config, again, "test")[0])  # every run scores the same points
    assert_in_bins(test, first.splits["test"].images, 17)
    expected = dequantize(first.splits["test"].images, 17, seeded_generator(config.data.binarization_seed, SPLIT_TAGS["test"]))
    assert torch.equal(test, expected)
    other_seed = evaluation_images(config_of("gaussian", binarization_seed=1), first, "test")[0]
    assert not torch.equal(test, other_seed)
    assert epoch_draw(config, first) == "dequantize"


@pytest.mark.algebra
def test_continuous_data_and_discrete_families_see_no_draw():
    floats = dataset_from_arrays(np.random.default_rng(3).random((20, 3, 3)), likelihood="gaussian")
    assert epoch_draw(config_of(), floats) is None
    assert torch.equal(evaluation_images(config_of(), floats, "test")[0], floats.splits["test"].images)
    levels = dataset_from_arrays(np.random.default_rng(3).integers(0, 256, (20, 3, 3), dtype=np.uint8), likelihood="categorical")
    assert epoch_draw(config_of(), levels) is None
    assert torch.equal(evaluation_images(config_of(), levels, "test")[0], levels.splits["test"].images.float() / 255)
    assert training_images(config_of(), levels).dtype == torch.uint8  # kept as levels, converted per batch


@pytest.mark.algebra
def test_bernoulli_binarizes_the_grey_values_of_levels_as_before():
    # the evaluation bits of grey digits are those of float grey images v / 16 (earlier versions' storage)
    dataset = load_dataset("digits")
    grey = dataset.splits["test"].images.numpy().astype(np.float32) / 16
    expected = torch.bernoulli(torch.from_numpy(grey), generator=seeded_generator(0, SPLIT_TAGS["test"]))
    assert torch.equal(evaluation_images(config_of(), dataset, "test")[0], expected)
    assert training_images(config_of(), dataset).dtype == torch.uint8 and epoch_draw(config_of(), dataset) == "binarize"
    static = training_images(config_of(binarization="static"), dataset)
    assert torch.equal(static, binarize(dataset.unit_images("train"), "static", seeded_generator(0, SPLIT_TAGS["train"])))


@pytest.mark.statistics
def test_training_dequantization_draws_afresh_within_each_bin():
    v = torch.arange(256, dtype=torch.uint8).repeat(40, 1)  # every level, 40 times
    generator = torch.Generator().manual_seed(0)
    first, second = dequantize(v, 256, generator), dequantize(v, 256, generator)
    assert not torch.equal(first, second)  # a fresh u each epoch
    assert_in_bins(first, v, 256) and assert_in_bins(second, v, 256)
    # u ~ U[0, 1): the offsets within the bins have mean 1/2, variance 1/12 (20480 draws: SE 0.002)
    offsets = first * 256 - v.float()
    assert abs(offsets.mean().item() - 0.5) < 0.01 and abs(offsets.var().item() - 1 / 12) < 0.005


@pytest.mark.algebra
@pytest.mark.parametrize("levels", [17, 256])
def test_dequantization_stays_below_the_top_of_each_bin(levels, monkeypatch):
    # u = 1 - 2^-24 rounds v + u up to v + 1 in float32 for v >= 1: the value must still be in v's bin
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None, out=None: torch.full(shape, TOP_UNIFORM, out=out))
    v = torch.arange(levels, dtype=torch.uint8).unsqueeze(0)
    assert (v[:, 1:].float() + TOP_UNIFORM == v[:, 1:].float() + 1).all()  # the rounding this guards against
    assert_in_bins(dequantize(v, levels, torch.Generator()), v, levels)


# ---------------------------------------------------------------- CIFAR-10


def cifar_archive(batches: dict[str, bytes], *, extra: bool = True) -> bytes:
    """A .tar.gz laid out like cifar-10-binary.tar.gz: cifar-10-batches-bin/<member>."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        members = {"batches.meta.txt": b"airplane\n"} if extra else {}
        for name, data in {**members, **batches}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cifar_batches(records: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """member name -> uint8 records [records, 3073] (label byte, then 3x32x32 pixels channels first)."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{index}.bin" for index in range(1, 6)] + ["test_batch.bin"]
    batches = {}
    for name in names:
        table = rng.integers(0, 256, (records, CIFAR_RECORD), dtype=np.uint8)
        table[:, 0] = rng.integers(0, 10, records)
        batches[name] = table
    return batches


def use_cifar(monkeypatch, tmp_path, data: bytes, records: int = 2) -> None:
    write(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", data)
    use_tiny_spec(monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": data}, {"train": 5 * records, "test": records})


@pytest.mark.algebra
def test_cifar10_reads_the_batches_from_the_archive(tmp_path, monkeypatch):
    batches = cifar_batches()
    use_cifar(monkeypatch, tmp_path, cifar_archive({name: table.tobytes() for name, table in batches.items()}))
    dataset = load_dataset("cifar10", tmp_path, download=False)
    train = np.concatenate([batches[f"data_batch_{index}.bin"] for index in range(1, 6)])
    assert torch.equal(dataset.splits["train"].images, torch.from_numpy(train[:, 1:]))
    assert dataset.splits["train"].labels.tolist() == train[:, 0].tolist()
    assert torch.equal(dataset.splits["test"].images, torch.from_numpy(batches["test_batch.bin"][:, 1:]))
    assert (dataset.levels, dataset.channels, dataset.data_shape, dataset.num_classes) == (256, 3, (3, 32, 32), 10)
    assert dataset.likelihood == "discretized-logistic" and list(tmp_path.joinpath("cifar10").iterdir()) == [tmp_path / "cifar10" / "cifar-10-binary.tar.gz"]
    assert load_dataset("cifar10", tmp_path, download=False, bits=5).levels == 32


@pytest.mark.algebra
def test_cifar10_refuses_a_bad_checksum_or_a_broken_archive(tmp_path, monkeypatch):
    good = cifar_archive({name: table.tobytes() for name, table in cifar_batches().items()})
    use_cifar(monkeypatch, tmp_path, good)
    path = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: sha256 mismatch \(expected " + hashlib.sha256(good).hexdigest()):
        load_dataset("cifar10", tmp_path, download=False)

    use_cifar(monkeypatch, tmp_path, good[: len(good) // 2])  # a truncated member, with its own checksum
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert assert_one_line(err).startswith(f"{path}: corrupt or truncated tar.gz archive (")

    odd = {name: table.tobytes() for name, table in cifar_batches().items()}
    odd["data_batch_3.bin"] += b"\0"
    use_cifar(monkeypatch, tmp_path, cifar_archive(odd))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert assert_one_line(err) == f"{path}: cifar-10-batches-bin/data_batch_3.bin holds {2 * CIFAR_RECORD + 1} bytes, expected 2 records of {CIFAR_RECORD}"

    missing = {name: table.tobytes() for name, table in cifar_batches().items() if name != "test_batch.bin"}
    use_cifar(monkeypatch, tmp_path, cifar_archive(missing))
    with pytest.raises(DataError, match="no cifar-10-batches-bin/test_batch.bin in the archive$"):
        load_dataset("cifar10", tmp_path, download=False)


@pytest.mark.e2e
def test_cifar10_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    assert assert_one_line(err) == (
        f"cifar10: missing cifar-10-binary.tar.gz in {tmp_path / 'cifar10'} and downloading is disabled; put the files there"
        " (from https://www.cs.toronto.edu/~kriz/) or point --data-dir / VAELAB_DATA at a folder that has them"
    )
    status, stdout, _ = run_cli("datasets", "--data-dir", tmp_path)
    assert status == 0
    assert "cifar10          missing" in stdout and "cifar10/cifar-10-binary.tar.gz" in stdout
    assert datasets.REGISTRY["cifar10"].files[0].size == 170_052_171


@pytest.mark.e2e
def test_a_dequantized_run_resumes_bitwise_equal(tmp_path):
    # the epoch's u come from the run's data generator, saved in the checkpoint: a resumed run replays them
    from vaelab.config import TrainConfig
    from vaelab.training import TrainingHooks, train

    config = dataclasses.replace(config_of("gaussian"), model=ModelConfig(likelihood="gaussian", hidden=(16,)), train=TrainConfig(epochs=3, eval_k=5), seed=4)
    reference = train(config, tmp_path / "reference", progress=False)

    def crash_at_epoch_2(path, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "crashed", progress=False, hooks=TrainingHooks(on_checkpoint=crash_at_epoch_2))
    resumed = train(config, tmp_path / "crashed", resume=True, progress=False)
    assert [row["bound"] for row in resumed.metrics] == [row["bound"] for row in reference.metrics]
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
