"""Data by path (issue 13): a .npz or a folder of images through load_dataset, train, evaluate,
compare and report; held-out test splits; the data's sha256 recorded and checked; bad input in one line.

The data is made here, from the embedded digits (8x8, values 0..16, scaled to 0..255 uint8).
"""

from __future__ import annotations

import hashlib
import json

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import run_main

from vaelab.builders import load_run
from vaelab.cli import main
from vaelab.data import load_dataset
from vaelab.data.user import dataset_from_arrays, dataset_from_torch
from vaelab.errors import DataError

TINY = ["--epochs", "1", "--hidden", "16", "--eval-every", "1", "--eval-k", "5", "--batch-size", "50", "--no-progress", "--threads", "1"]


def digits_uint8(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` digits as uint8 [N, 8, 8] in 0..255, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images[:count] * (255 / 16)).astype(np.uint8)
    return images, digits.target[:count].astype(np.int64)


@pytest.fixture
def npz_path(tmp_path):
    images, labels = digits_uint8(400)
    path = tmp_path / "digits.npz"
    np.savez(path, train=images[:300], train_labels=labels[:300], test=images[300:], test_labels=labels[300:])
    return path


def write_image_folder(root, images, labels, split_of):
    """PNGs under root/<split>/<class>/ (split_of(i) gives each image's split)."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / split_of(index) / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")


@pytest.mark.algebra
def test_npz_with_splits_and_labels_loads_as_a_dataset(npz_path):
    dataset = load_dataset(str(npz_path))
    images, labels = digits_uint8(400)
    assert dataset.name == str(npz_path) and dataset.image_shape == (8, 8) and dataset.data_shape == (1, 8, 8)
    assert dataset.files == {str(npz_path): hashlib.sha256(npz_path.read_bytes()).hexdigest()}
    torch.testing.assert_close(dataset.splits["train"].images, torch.from_numpy(images[:300].reshape(300, 64) / 255).float())
    assert torch.equal(dataset.splits["test"].labels, torch.from_numpy(labels[300:]))
    assert dataset.likelihood == "bernoulli" and not dataset.is_binary and dataset.num_classes == 10


@pytest.mark.algebra
def test_a_missing_test_split_is_a_seeded_held_out_fraction():
    images, labels = digits_uint8(200)
    first = dataset_from_arrays(images, train_labels=labels, test_fraction=0.25, split_seed=3)
    again = dataset_from_arrays(images, train_labels=labels, test_fraction=0.25, split_seed=3)
    other = dataset_from_arrays(images, train_labels=labels, test_fraction=0.25, split_seed=4)
    assert len(first.splits["test"].images) == 50 and len(first.splits["train"].images) == 150
    assert torch.equal(first.splits["test"].images, again.splits["test"].images)
    assert not torch.equal(first.splits["test"].images, other.splits["test"].images)
    # a partition: every image once, labels following their images
    rows = torch.cat([first.splits["train"].images, first.splits["test"].images])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, (torch.from_numpy(images).reshape(200, 64).float() / 255).tolist()))
    by_image = {tuple(row): label for row, label in zip((torch.from_numpy(images).reshape(200, 64).float() / 255).tolist(), labels)}
    assert all(by_image[tuple(row)] == label for row, label in zip(first.splits["test"].images.tolist(), first.splits["test"].labels.tolist()))


@pytest.mark.algebra
def test_colour_is_held_channels_first_and_vectors_flat():
    colour = np.zeros((4, 3, 5, 3), dtype=np.uint8)
    colour[:, 1, 2, 2] = 255  # blue at row 1, column 2
    dataset = dataset_from_arrays(colour, test=colour)
    assert dataset.channels == 3 and dataset.data_shape == (3, 3, 5) and dataset.data_dim == 45
    row = dataset.splits["train"].images[0].reshape(3, 3, 5)
    assert row[2, 1, 2] == 1 and row.sum() == 1
    vectors = dataset_from_arrays(np.random.default_rng(0).random((10, 7)), likelihood="gaussian")
    assert vectors.flat and vectors.data_shape == (7,) and vectors.image_shape == (1, 7) and vectors.likelihood == "gaussian"
    binary = dataset_from_arrays(np.eye(6, dtype=np.float32)[:, None, :].repeat(2, 1))
    assert binary.is_binary


@pytest.mark.algebra
def test_a_torch_dataset_becomes_a_dataset():
    images, labels = digits_uint8(60)
    source = torch.utils.data.TensorDataset(torch.from_numpy(images[:, None]), torch.from_numpy(labels))  # [N, 1, H, W]
    dataset = dataset_from_torch(source, test_fraction=0.5)
    assert dataset.data_shape == (1, 8, 8) and len(dataset.splits["test"].images) == 30 and dataset.num_classes == 10


@pytest.mark.algebra
def test_an_image_folder_with_split_and_class_folders(tmp_path):
    images, labels = digits_uint8(120)
    write_image_folder(tmp_path / "folder", images, labels, lambda i: "train" if i < 90 else "test")
    dataset = load_dataset(str(tmp_path / "folder"))
    assert {split: len(s.images) for split, s in dataset.splits.items()} == {"train": 90, "test": 30}
    # class folders sorted by name give the labels; PNG keeps the bytes exactly
    order = sorted(range(90, 120), key=lambda i: (labels[i], i))
    assert dataset.splits["test"].labels.tolist() == [int(labels[i]) for i in order]
    torch.testing.assert_close(dataset.splits["test"].images, torch.from_numpy(images[order].reshape(30, 64) / 255).float())
    flat = tmp_path / "flat"
    flat.mkdir()
    write_image_folder(flat, images[:20], labels[:20], lambda i: ".")
    unsplit = load_dataset(str(flat))  # class folders, no splits: 10% held out
    assert len(unsplit.splits["test"].images) == 2 and unsplit.splits["train"].labels is not None


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no such file or folder"),
        (lambda p: np.savez(p, test=np.zeros((3, 4, 4), np.uint8)), "no 'train' array"),
        (lambda p: np.savez(p, train=np.full((3, 4, 4), 2.0)), "must lie in [0, 1]"),
        (lambda p: np.savez(p, train=np.zeros((3, 4, 4, 5), np.uint8)), "1, 3 or 4 channels"),
        (lambda p: np.savez(p, train=np.zeros(3, np.uint8)), "expected a non-empty array"),
        (lambda p: np.savez(p, train=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros(2, np.int64)), "labels must be 3"),
        (lambda p: np.savez(p, train=np.zeros((3, 4, 4), np.uint8), test=np.zeros((3, 5, 4), np.uint8)), "test images are 5x4x1"),
        (lambda p: p.write_bytes(b"not a zip"), "not an .npz archive"),
    ],
)
@pytest.mark.algebra
def test_bad_data_files_get_one_line(tmp_path, make, fragment):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(DataError) as error:
        load_dataset(str(path))
    assert fragment in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.algebra
def test_an_image_folder_of_mixed_sizes_gets_one_line(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="b.png: is 4x5, the others 4x4"):
        load_dataset(str(tmp_path))


@pytest.mark.slow
@pytest.mark.e2e
def test_npz_through_train_evaluate_compare_and_report(npz_path, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(npz_path), *TINY, "--out", str(run)]) == 0
    environment = json.loads((run / "environment.json").read_text())
    assert environment["data_files_sha256"] == {str(npz_path): hashlib.sha256(npz_path.read_bytes()).hexdigest()}
    assert json.loads((run / "config.json").read_text())["data"]["dataset"] == str(npz_path)
    assert main(["evaluate", str(run), "--k", "5"]) == 0
    study = tmp_path / "study"
    assert main(["compare", "--dataset", str(npz_path), *TINY, "--curve-images", "20", "--out", str(study)]) == 0
    assert (study / "report.html").exists()
    assert main(["report", str(study)]) == 0
    capsys.readouterr()

    # the data changes: evaluate and resume refuse in one line
    images, _ = digits_uint8(400)
    np.savez(npz_path, train=images[:300], test=images[301:])
    for args in (["evaluate", str(run), "--k", "5"], ["train", "--dataset", str(npz_path), *TINY, "--epochs", "2", "--resume", "--out", str(run)]):
        status, error = run_main(args, capsys)
        assert status == 1 and error.count("\n") == 1 and "the data changed since" in error and str(npz_path) in error, error


@pytest.mark.slow
@pytest.mark.e2e
def test_colour_npz_through_compare_draws_colour_tiles(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "colour.npz"
    np.savez(path, train=rng.integers(0, 256, (120, 8, 8, 3), dtype=np.uint8), test=rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8))
    study = tmp_path / "study"
    assert main(["compare", "--dataset", str(path), *TINY, "--curve-images", "10", "--out", str(study)]) == 0
    samples = matplotlib.image.imread(study / "figures" / "samples.png")
    assert samples[..., :3].std(axis=-1).max() > 0.05  # colour pixels, not grey ones


@pytest.mark.e2e
def test_image_folder_through_train_evaluate_and_load_run(tmp_path, monkeypatch):
    images, labels = digits_uint8(150)
    write_image_folder(tmp_path / "folder", images, labels, lambda i: ".")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "folder/", *TINY, "--out", "run"]) == 0  # a relative path, stored absolute
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["dataset"] == str(tmp_path / "folder")
    monkeypatch.chdir("/")
    assert main(["evaluate", str(tmp_path / "run"), "--k", "5"]) == 0
    loaded = load_run(tmp_path / "run")
    assert len(loaded.dataset.splits["test"].images) == 15 and loaded.config.data.test_fraction == 0.1
