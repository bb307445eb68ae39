"""Data by path (issues 13 and 29): a .npz or a folder of images through load_dataset, train, evaluate,
compare and report; held-out test splits; the data's sha256 recorded and checked; bad input in one
line. Malformed files end in one DataError line naming the file, before anything is allocated from
a size the file merely declares; pickles are never loaded, a FIFO never blocks.

The data is made here, from the embedded digits (8x8, values 0..16, scaled to 0..255 uint8)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.builders import load_run
from vaelab.cli import main
from vaelab.data import load_dataset
from vaelab.data.readers import read_idx_labels, read_regular_file
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
    assert torch.equal(dataset.splits["train"].images, torch.from_numpy(images[:300].reshape(300, 64)))  # stored as uint8 levels
    torch.testing.assert_close(dataset.unit_images("train"), torch.from_numpy(images[:300].reshape(300, 64) / 255).float())
    assert torch.equal(dataset.splits["test"].labels, torch.from_numpy(labels[300:]))
    assert dataset.likelihood == "bernoulli" and not dataset.is_binary and dataset.num_classes == 10 and dataset.levels == 256


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
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, images.reshape(200, 64).tolist()))
    by_image = {tuple(row): label for row, label in zip(images.reshape(200, 64).tolist(), labels)}
    assert all(by_image[tuple(row)] == label for row, label in zip(first.splits["test"].images.tolist(), first.splits["test"].labels.tolist()))


@pytest.mark.algebra
def test_colour_is_held_channels_first_and_vectors_flat():
    colour = np.zeros((4, 3, 5, 3), dtype=np.uint8)
    colour[:, 1, 2, 2] = 255  # blue at row 1, column 2
    dataset = dataset_from_arrays(colour, test=colour)
    assert dataset.channels == 3 and dataset.data_shape == (3, 3, 5) and dataset.data_dim == 45
    row = dataset.unit_images("train")[0].reshape(3, 3, 5)
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
    assert torch.equal(dataset.splits["test"].images, torch.from_numpy(images[order].reshape(30, 64))) and dataset.levels == 256
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


def one_line_data_error(call, path) -> str:
    """The message of the DataError that ``call()`` raises: one line, naming ``path``."""
    with pytest.raises(DataError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def good_npz(compressed: bool = False) -> bytes:
    stream = io.BytesIO()
    rng = np.random.default_rng(0)
    (np.savez_compressed if compressed else np.savez)(stream, train=rng.integers(0, 256, (6, 4, 4), np.uint8), test=rng.integers(0, 256, (2, 4, 4), np.uint8))
    return stream.getvalue()


def npz_holding(train: bytes) -> bytes:
    """A .npz whose one member, train.npy, holds ``train``."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("train.npy", train)
    return stream.getvalue()


def npz_declaring(shape: tuple[int, ...], payload: bytes) -> bytes:
    """A .npz whose train.npy has a valid header declaring uint8 ``shape``, followed by ``payload``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return npz_holding(header.getvalue() + payload)


class MakesAFolderWhenUnpickled:
    """Unpickling this runs os.mkdir(folder): the proof that a pickle was loaded."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


@pytest.mark.parametrize(
    "contents, fragment",
    [
        (lambda: b"", "an empty file (0 bytes), not an .npz archive"),
        (lambda: good_npz()[: len(good_npz()) // 2], "not an .npz archive, or a truncated or corrupt one"),
        (lambda: np.random.default_rng(0).bytes(300), "not an .npz archive, or a truncated or corrupt one"),
        (lambda: npz_declaring((10**12, 8, 8), bytes(64)), "train.npy declares shape 1000000000000x8x8 of uint8 (64,000,000,000,000 bytes) but holds 64 bytes"),
        (lambda: npz_declaring((2, 8, 8), bytes(200)), "train.npy declares shape 2x8x8 of uint8 (128 bytes) but holds 200 bytes"),
        (lambda: npz_holding(b"\x93NUMPY\x03\x00" + bytes(100)), "train.npy is in .npy format 3.0; vaelab reads 1.0 and 2.0"),
        (lambda: npz_holding(b"no npy magic string here"), "not an .npz archive, or a truncated or corrupt one"),
    ],
    ids=["empty", "truncated", "random-bytes", "declares-58-TiB", "declares-less", "npy-3.0", "no-npy-magic"],
)
@pytest.mark.algebra
def test_a_malformed_npz_gets_one_line_naming_it(tmp_path, contents, fragment):
    path = tmp_path / "data.npz"
    path.write_bytes(contents())
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert fragment in message and "allow_pickle" not in message, message


@pytest.mark.algebra
def test_a_pickle_named_npz_is_no_npz_archive_and_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "data.npz"
    np.save(path.with_suffix(".npy"), np.array([MakesAFolderWhenUnpickled(marker)], dtype=object), allow_pickle=True)
    path.with_suffix(".npy").rename(path)  # a .npy of objects named .npz: numpy's np.load would offer allow_pickle
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert message.startswith(f"{path}: not an .npz archive") and "pickle" not in message.removeprefix(str(path)).lower()
    assert not marker.exists()


@pytest.mark.algebra
def test_an_object_array_in_an_npz_is_refused_unread(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "data.npz"
    np.savez(path, train=np.array([MakesAFolderWhenUnpickled(marker)] * 3, dtype=object))
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert "train.npy holds Python objects (a pickle), which vaelab never loads" in message and "allow_pickle" not in message
    assert not marker.exists()


@pytest.mark.algebra
def test_an_npz_larger_than_the_memory_available_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    path.write_bytes(good_npz())
    monkeypatch.setattr("vaelab.data.user.available_memory", lambda: 100)  # 8 images of 4x4 need 640 bytes
    monkeypatch.setattr(np.lib.format, "read_array", lambda *args, **kwargs: pytest.fail("an array was read"))
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert "of memory to read, more than the" in message


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
# No deadline: the error raised is what is tested, not speed (as in test_data.py's truncation test).
@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.algebra
def test_a_truncated_or_flipped_npz_loads_or_gets_a_data_error(tmp_path_factory, compressed, data):
    contents = bytearray(good_npz(compressed))
    if data.draw(st.booleans(), label="truncate"):
        contents = contents[: data.draw(st.integers(0, len(contents) - 1), label="length")]
    else:
        contents[data.draw(st.integers(0, len(contents) - 1), label="at")] ^= data.draw(st.integers(1, 255), label="xor")
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(bytes(contents))
    try:
        load_dataset(str(path))  # a flip in a byte nothing checks (a timestamp, padding) still loads
    except DataError as error:
        assert "\n" not in str(error) and str(path) in str(error)


# ---------------------------------------------------------------- splits


@pytest.mark.algebra
def test_a_split_of_one_image_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, train=np.zeros((5, 4, 4), np.uint8), test=np.zeros((1, 4, 4), np.uint8))
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert "the test split has 1 image; a split needs at least 2" in message


@pytest.mark.algebra
def test_a_held_out_test_split_has_at_least_two_images(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, train=np.zeros((10, 4, 4), np.uint8))  # 10% of 10 rounds to 1
    dataset = load_dataset(str(path), test_fraction=0.1)
    assert len(dataset.splits["test"].images) == 2 and len(dataset.splits["train"].images) == 8
    np.savez(path, train=np.zeros((3, 4, 4), np.uint8))
    message = one_line_data_error(lambda: load_dataset(str(path)), path)
    assert "leaves fewer than 2 to train on" in message


# ---------------------------------------------------------------- FIFOs


def returns_without_blocking(call, fifo: Path) -> BaseException | None:
    """What ``call()`` raised (None if nothing), failing the test if it blocks on ``fifo``."""
    outcome: dict[str, BaseException] = {}

    def target():
        try:
            call()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer that leaves at once unblocks the reader
        pytest.fail(f"blocked reading the FIFO {fifo}")
    return outcome.get("error")


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    os.mkfifo(path)
    return path


@pytest.mark.algebra
def test_a_fifo_as_the_dataset_is_not_a_regular_file(fifo):
    error = returns_without_blocking(lambda: load_dataset(str(fifo)), fifo)
    assert isinstance(error, DataError) and str(error).startswith(f"{fifo}: not a regular file"), error


@pytest.mark.parametrize("read", [read_regular_file, lambda path: read_idx_labels(path, count=None, num_classes=10)], ids=["file", "idx"])
@pytest.mark.algebra
def test_a_reader_given_a_fifo_refuses_it_without_blocking(fifo, read):
    error = returns_without_blocking(lambda: read(fifo), fifo)
    assert isinstance(error, DataError) and str(error) == f"{fifo}: not a regular file", error


@pytest.mark.e2e
def test_the_cli_refuses_a_fifo_in_one_line(fifo, tmp_path, capsys):
    result = {}
    assert returns_without_blocking(lambda: result.update(cli=run_main(["train", "--dataset", str(fifo), *TINY, "--out", str(tmp_path / "run")], capsys)), fifo) is None
    status, error = result["cli"]
    assert status == 1 and error.count("\n") == 1 and f"{fifo}: not a regular file" in error and "Traceback" not in error, error


# ---------------------------------------------------------------- images


def png_declaring(width: int, height: int) -> bytes:
    """A grey PNG whose header declares width x height pixels, with no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def good_png() -> bytes:
    from PIL import Image

    stream = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), np.uint8)).save(stream, format="PNG")
    return stream.getvalue()


def image_folder(root: Path, bad: bytes) -> Path:
    """root/ with four good 8x8 PNGs and bad.png holding ``bad``."""
    root.mkdir()
    for index in range(4):
        (root / f"{index}.png").write_bytes(good_png())
    (root / "bad.png").write_bytes(bad)
    return root / "bad.png"


@pytest.mark.parametrize(
    "contents, fragment",
    [
        (lambda: png_declaring(100_000, 100_000), "declares too many pixels for an image"),  # PIL's error
        (lambda: png_declaring(10_000, 10_000), "declares too many pixels for an image"),  # PIL's warning, made an error
        (lambda: good_png()[:60], "not a readable image"),
        (lambda: np.random.default_rng(0).bytes(300), "not a readable image"),
    ],
    ids=["100000x100000", "10000x10000", "truncated", "random-bytes"],
)
@pytest.mark.algebra
def test_a_malformed_image_gets_one_line_naming_it(tmp_path, contents, fragment):
    bad = image_folder(tmp_path / "images", contents())
    assert fragment in one_line_data_error(lambda: load_dataset(str(tmp_path / "images")), bad)


def written(path: Path, contents: bytes) -> Path:
    path.write_bytes(contents)
    return path


def one_image_test_split(path: Path) -> Path:
    np.savez(path, train=np.zeros((5, 4, 4), np.uint8), test=np.zeros((1, 4, 4), np.uint8))
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda root: written(root / "data.npz", b""), "data.npz: an empty file (0 bytes)"),
        (lambda root: written(root / "data.npz", good_npz()[:100]), "data.npz: not an .npz archive"),
        (lambda root: written(root / "data.npz", npz_declaring((10**12, 8, 8), bytes(64))), "data.npz: train.npy declares shape 1000000000000x8x8"),
        (lambda root: one_image_test_split(root / "data.npz"), "the test split has 1 image"),
        (lambda root: image_folder(root / "images", png_declaring(100_000, 100_000)).parent, "bad.png: declares too many pixels"),
    ],
    ids=["empty", "truncated", "declares-58-TiB", "one-image-split", "100000x100000-png"],
)
@pytest.mark.e2e
def test_the_cli_refuses_a_malformed_dataset_in_one_line(tmp_path, capsys, make, fragment):
    dataset = make(tmp_path)
    status, error = run_main(["train", "--dataset", str(dataset), *TINY, "--out", str(tmp_path / "run")], capsys)
    assert status == 1 and error.count("\n") == 1 and fragment in error and "Traceback" not in error, error


# No deadline: see the .npz test above.
@settings(max_examples=40, deadline=None)
@given(length=st.integers(0, len(good_png()) - 1))
@pytest.mark.algebra
def test_a_truncated_png_loads_or_gets_a_data_error(tmp_path_factory, length):
    root = tmp_path_factory.mktemp("png") / "images"
    bad = image_folder(root, good_png()[:length])
    try:
        load_dataset(str(root))  # a cut in the trailing IEND chunk leaves every pixel readable
    except DataError as error:
        assert "\n" not in str(error) and str(bad) in str(error)
