"""Malformed data files (issue 29): each ends in one DataError line naming the file, before anything
is allocated from a size the file merely declares; pickles are never loaded, a FIFO never blocks."""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.data import load_dataset
from vaelab.data.readers import read_idx_labels, read_regular_file
from vaelab.errors import DataError

TINY = ["--epochs", "1", "--hidden", "8", "--eval-k", "2", "--batch-size", "10", "--no-progress", "--threads", "1"]


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
