"""Datasets by name (vaelab.data): file readers, checksums and downloads (capped at the expected
size), the dataset registry, binarization.

Most tests use small synthetic files written to tmp_path. Those marked "real files" read the
shared dataset folder ($VAELAB_TEST_DATA, else <repo root>/../shared/data) and skip without it.
No test touches the network: downloads are served from 127.0.0.1 or a stand-in response."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import http.server
import os
import socket
import struct
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from vaelab.data import BINARIZATIONS, DATASET_NAMES, binarize, dataset_status, datasets, load_dataset, resolve_data_dir
from vaelab.data.download import FileSpec
from vaelab.data.readers import read_amat, read_frey_mat, read_idx_images, read_idx_labels, read_labelled_images
from vaelab.errors import ConfigError, DataError

MNIST_SHAPE = (28, 28)
FREY_SHAPE = (28, 20)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Make urllib reach 127.0.0.1 directly, whatever proxy the environment sets."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- synthetic files


def idx_bytes(array: np.ndarray, *, type_code: int = 0x08, magic: bytes = b"\0\0") -> bytes:
    """An IDX file holding `array` as uint8; `type_code` and `magic` can be set to break it."""
    header = magic + bytes([type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def amat_bytes(values: np.ndarray) -> bytes:
    """The .amat text of a 0/1 matrix [rows, cols]."""
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in values)


def frey_mat_bytes(tmp_path: Path, faces: np.ndarray) -> bytes:
    """A MAT file holding uint8 faces [N, 28, 20] as the variable `ff` [560, N], one face per column."""
    path = tmp_path / "faces.mat"
    scipy.io.savemat(path, {"ff": faces.reshape(len(faces), -1).T})
    return path.read_bytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_images(rng: np.random.Generator, count: int, shape=MNIST_SHAPE) -> np.ndarray:
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def tiny_mnist_files(rng: np.random.Generator, n_train: int = 5, n_test: int = 3) -> dict[str, bytes]:
    """File name -> bytes of an MNIST-layout dataset with a few random images."""
    files = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(random_images(rng, count)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(rng.integers(0, 10, count)))
    return files


def use_tiny_spec(monkeypatch, name: str, files: dict[str, bytes], split_sizes: dict[str, int]) -> None:
    """Register `name` with the given files' checksums and split sizes for this test."""
    spec = dataclasses.replace(
        datasets.REGISTRY[name],
        files=tuple(FileSpec(file_name, sha256(data)) for file_name, data in files.items()),
        split_sizes=split_sizes,
    )
    monkeypatch.setitem(datasets.REGISTRY, name, spec)


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------- IDX reader


@pytest.mark.algebra
def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = random_images(rng, 4), rng.integers(0, 10, 4)
    images_path = write(tmp_path / "images.gz", gzip.compress(idx_bytes(images)))
    labels_path = write(tmp_path / "labels.gz", gzip.compress(idx_bytes(labels)))
    read_images, read_labels = read_labelled_images(
        images_path, labels_path, count=4, image_shape=MNIST_SHAPE, num_classes=10
    )
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda data: data[:-1], "truncated: 3135 data bytes, but shape 4x28x28 needs 3136"),
        (lambda data: data + b"\0\0", "2 unexpected bytes after the data of shape 4x28x28"),
        (lambda data: data[:10], "truncated IDX header (10 of 16 bytes)"),
        (lambda data: data[:3], "too short for an IDX header"),
        (lambda data: b"\x01" + data[1:], "not an IDX file (magic number 0x01000803"),
        (lambda data: data[:2] + b"\x0d" + data[3:], "IDX data type code 0x0d, expected 0x08"),
        (lambda data: data[:3] + b"\x02" + data[4:], "IDX file has 2 dimensions, expected 3"),
    ],
    ids=["truncated", "trailing", "short-header", "tiny", "magic", "dtype", "ndim"],
)
@pytest.mark.algebra
def test_idx_images_reject_bad_header_or_length(tmp_path, mutate, problem):
    data = mutate(idx_bytes(random_images(np.random.default_rng(0), 4)))
    path = write(tmp_path / "images.gz", gzip.compress(data))
    with pytest.raises(DataError) as err:
        read_idx_images(path, count=4, image_shape=MNIST_SHAPE)
    assert assert_one_line(err).startswith(f"{path}: ")
    assert problem in str(err.value)


@pytest.mark.algebra
def test_idx_images_reject_wrong_image_size_and_count(tmp_path):
    path = write(tmp_path / "images.gz", gzip.compress(idx_bytes(np.zeros((4, 28, 27)))))
    with pytest.raises(DataError, match="images are 28x27, expected 28x28"):
        read_idx_images(path, count=4, image_shape=MNIST_SHAPE)
    path = write(tmp_path / "images.gz", gzip.compress(idx_bytes(np.zeros((4, 28, 28)))))
    with pytest.raises(DataError, match="4 images, expected 5"):
        read_idx_images(path, count=5, image_shape=MNIST_SHAPE)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not gzip at all", "corrupt or truncated gzip data"),
        (gzip.compress(b"\0" * 1000)[:-12], "corrupt or truncated gzip data"),
        (gzip.compress(b"\0" * 1000)[:-4] + b"\xff\xff\xff\xff", "corrupt or truncated gzip data"),
    ],
    ids=["not-gzip", "truncated-gzip", "bad-length-trailer"],
)
@pytest.mark.algebra
def test_idx_rejects_broken_gzip(tmp_path, data, problem):
    path = write(tmp_path / "labels.gz", data)
    with pytest.raises(DataError) as err:
        read_idx_labels(path, count=None, num_classes=10)
    assert problem in assert_one_line(err)


@pytest.mark.algebra
def test_idx_labels_reject_values_outside_classes(tmp_path):
    path = write(tmp_path / "labels.gz", gzip.compress(idx_bytes(np.array([0, 9, 10, 3]))))
    with pytest.raises(DataError, match=r"label value 10 outside 0\.\.9"):
        read_idx_labels(path, count=4, num_classes=10)


@pytest.mark.algebra
def test_idx_rejects_image_label_count_mismatch(tmp_path):
    images_path = write(tmp_path / "images.gz", gzip.compress(idx_bytes(np.zeros((4, 28, 28)))))
    labels_path = write(tmp_path / "labels.gz", gzip.compress(idx_bytes(np.zeros(3))))
    with pytest.raises(DataError) as err:
        read_labelled_images(images_path, labels_path, count=4, image_shape=MNIST_SHAPE, num_classes=10)
    assert assert_one_line(err) == f"{images_path}: 4 images, but {labels_path} has 3 labels"


@pytest.mark.algebra
def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx_labels(tmp_path / "absent.gz", count=None, num_classes=10)


# ---------------------------------------------------------------- amat reader


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
@pytest.mark.algebra
def test_amat_round_trip(tmp_path, suffix):
    values = np.random.default_rng(0).integers(0, 2, size=(3, 784), dtype=np.uint8)
    text = amat_bytes(values)
    path = write(tmp_path / f"split{suffix}", gzip.compress(text) if suffix.endswith(".gz") else text)
    np.testing.assert_array_equal(read_amat(path, rows=3, cols=784), values)


NOT_SINGLE_SPACED = "does not separate its values by single spaces"


def _replace_line(text: bytes, index: int, line: bytes) -> bytes:
    lines = text.split(b"\n")
    lines[index] = line
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda text: _replace_line(text, 1, b"0 " * 782 + b"1"), "line 2 has 783 values, expected 784"),
        (lambda text: _replace_line(text, 1, b"0 " * 784 + b"1"), "line 2 has 785 values, expected 784"),
        (lambda text: _replace_line(text, 2, b"0 2" + b" 0" * 782),
         "line 3 has the value b'2', expected 0 or 1"),
        (lambda text: _replace_line(text, 0, b"0  1" + b" 0" * 782), f"line 1 {NOT_SINGLE_SPACED}"),
        (lambda text: text.replace(b"\n", b"\r\n"), f"line 1 {NOT_SINGLE_SPACED}"),
        (lambda text: text[:-1], "line 3 has no newline at its end (truncated?)"),
        (lambda text: text + b"\n", "line 4 has 0 values, expected 784"),
    ],
    ids=["short-row", "long-row", "non-binary", "double-space", "crlf", "no-final-newline", "blank-line"],
)
@pytest.mark.algebra
def test_amat_rejects_bad_layout(tmp_path, mutate, problem):
    text = amat_bytes(np.zeros((3, 784), dtype=np.uint8))
    path = write(tmp_path / "split.amat", mutate(text))
    with pytest.raises(DataError) as err:
        read_amat(path, rows=3, cols=784)
    assert assert_one_line(err) == f"{path}: {problem}"


@pytest.mark.algebra
def test_amat_rejects_wrong_row_count(tmp_path):
    path = write(tmp_path / "split.amat", amat_bytes(np.zeros((3, 784), dtype=np.uint8)))
    with pytest.raises(DataError) as err:
        read_amat(path, rows=4, cols=784)
    assert assert_one_line(err) == f"{path}: 3 rows, expected 4"


@pytest.mark.algebra
def test_amat_rejects_broken_gzip(tmp_path):
    path = write(tmp_path / "split.amat.gz", gzip.compress(amat_bytes(np.zeros((3, 784))))[:-20])
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        read_amat(path, rows=3, cols=784)


# ---------------------------------------------------------------- Frey MAT reader


@pytest.mark.algebra
def test_frey_round_trip(tmp_path):
    faces = random_images(np.random.default_rng(0), 5, FREY_SHAPE)
    path = write(tmp_path / "frey.mat", frey_mat_bytes(tmp_path, faces))
    np.testing.assert_array_equal(read_frey_mat(path, count=5, image_shape=FREY_SHAPE), faces)


@pytest.mark.parametrize(
    ("contents", "problem"),
    [
        (None, "not a readable MATLAB file"),
        ({"faces": np.zeros((560, 5), np.uint8)}, "no variable 'ff' (variables found: faces)"),
        ({"ff": np.zeros((560, 5), np.float64)}, "variable 'ff' has dtype float64, expected uint8"),
        ({"ff": np.zeros((28, 100), np.uint8)}, "variable 'ff' has shape (28, 100), expected (560, 5)"),
        ({"ff": np.zeros((560, 4), np.uint8)}, "variable 'ff' has shape (560, 4), expected (560, 5)"),
    ],
    ids=["not-mat", "no-ff", "dtype", "shape", "count"],
)
@pytest.mark.algebra
def test_frey_rejects_bad_mat(tmp_path, contents, problem):
    path = tmp_path / "frey.mat"
    if contents is None:
        path.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 10)
    else:
        scipy.io.savemat(path, contents)
    with pytest.raises(DataError) as err:
        read_frey_mat(path, count=5, image_shape=FREY_SHAPE)
    assert assert_one_line(err).startswith(f"{path}: {problem}")


# ---------------------------------------------------------------- property: truncation is always a DataError


@pytest.fixture(scope="module")
def valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "images.gz": gzip.compress(idx_bytes(random_images(rng, 3))),
        "split.amat": amat_bytes(rng.integers(0, 2, size=(3, 784))),
        "split.amat.gz": gzip.compress(amat_bytes(rng.integers(0, 2, size=(3, 784)))),
    }


@pytest.fixture(scope="module")
def truncation_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("truncated")


@pytest.mark.parametrize("name", ["images.gz", "split.amat", "split.amat.gz"])
# No deadline: what is tested is the error raised, not speed; on a loaded machine one example (a
# gzip stream or a text file parsed) can take longer than any fixed limit, and a deadline would
# then fail the test, or flake it, for a reason that has nothing to do with truncation.
@settings(max_examples=50, deadline=None)
@given(fraction=st.floats(min_value=0, max_value=1, exclude_max=True))
@pytest.mark.algebra
def test_truncated_files_always_raise_data_error(valid_files, truncation_dir, name, fraction):
    data = valid_files[name]
    path = write(truncation_dir / name, data[: int(fraction * len(data))])
    with pytest.raises(DataError):
        if name == "images.gz":
            read_idx_images(path, count=3, image_shape=MNIST_SHAPE)
        else:
            read_amat(path, rows=3, cols=784)


# ---------------------------------------------------------------- data folder


@pytest.mark.algebra
def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "vaelab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "vaelab"
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("relative") == tmp_path / "relative"


# ---------------------------------------------------------------- loading synthetic datasets


@pytest.mark.algebra
def test_load_tiny_mnist_records_files_and_scales_values(tmp_path, monkeypatch):
    files = tiny_mnist_files(np.random.default_rng(0))
    for name, data in files.items():
        write(tmp_path / "mnist" / name, data)
    use_tiny_spec(monkeypatch, "mnist", files, {"train": 5, "test": 3})

    dataset = load_dataset("mnist", tmp_path, download=False)

    pixels = np.frombuffer(gzip.decompress(files["train-images-idx3-ubyte.gz"]), np.uint8, offset=16)
    assert torch.equal(dataset.splits["train"].images, torch.from_numpy(pixels.copy()).view(5, 784))  # uint8 levels, as read
    expected = torch.from_numpy(pixels / 255).float().view(5, 784)
    torch.testing.assert_close(dataset.unit_images("train"), expected)
    assert dataset.levels == 256
    assert dataset.splits["test"].labels.dtype == torch.int64
    assert dataset.splits["test"].labels.shape == (3,)
    assert dataset.files == {str(tmp_path / "mnist" / name): sha256(data) for name, data in files.items()}
    assert (dataset.data_dim, dataset.num_classes, dataset.likelihood) == (784, 10, "bernoulli")


@pytest.mark.algebra
def test_sha256_mismatch_names_the_file(tmp_path, monkeypatch):
    files = tiny_mnist_files(np.random.default_rng(0))
    for name, data in files.items():
        write(tmp_path / "mnist" / name, data)
    use_tiny_spec(monkeypatch, "mnist", files, {"train": 5, "test": 3})
    corrupt = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    corrupt.write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 3]))))

    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=False)

    expected = files["t10k-labels-idx1-ubyte.gz"]
    assert assert_one_line(err) == (
        f"{corrupt}: sha256 mismatch (expected {sha256(expected)}, got {sha256(corrupt.read_bytes())});"
        " delete it to download again"
    )


@pytest.mark.algebra
def test_binarized_mnist_reads_plain_or_gzipped_amat(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    sizes = {"train": 4, "valid": 2, "test": 3}
    values = {split: rng.integers(0, 2, size=(rows, 784), dtype=np.uint8) for split, rows in sizes.items()}
    texts = {split: amat_bytes(array) for split, array in values.items()}
    gzipped = {split: gzip.compress(text) for split, text in texts.items()}
    spec = dataclasses.replace(
        datasets.REGISTRY["binarized-mnist"],
        files=tuple(
            FileSpec(
                f"binarized_mnist_{split}.amat",
                sha256(texts[split]),
                also_accepted=((f"binarized_mnist_{split}.amat.gz", sha256(gzipped[split])),),
            )
            for split in sizes
        ),
        split_sizes=sizes,
    )
    monkeypatch.setitem(datasets.REGISTRY, "binarized-mnist", spec)
    folder = tmp_path / "binarized-mnist"
    for split in values:
        write(folder / f"binarized_mnist_{split}.amat.gz", gzipped[split])
    write(folder / "binarized_mnist_test.amat", texts["test"])  # a plain file wins over its .gz

    dataset = load_dataset("binarized-mnist", tmp_path, download=False)

    assert list(dataset.splits) == ["train", "valid", "test"]
    for split, array in values.items():
        assert torch.equal(dataset.splits[split].images, torch.from_numpy(array))
        assert dataset.splits[split].labels is None
    assert dataset.files == {
        str(folder / "binarized_mnist_train.amat.gz"): sha256(gzipped["train"]),
        str(folder / "binarized_mnist_valid.amat.gz"): sha256(gzipped["valid"]),
        str(folder / "binarized_mnist_test.amat"): sha256(texts["test"]),
    }
    assert dataset.is_binary and dataset.num_classes is None and dataset.levels == 2


@pytest.mark.algebra
def test_frey_face_split_is_fixed_and_covers_all_faces(tmp_path, monkeypatch):
    faces = random_images(np.random.default_rng(0), 12, FREY_SHAPE)
    data = frey_mat_bytes(tmp_path, faces)
    write(tmp_path / "frey-face" / "frey_rawface.mat", data)
    use_tiny_spec(monkeypatch, "frey-face", {"frey_rawface.mat": data}, {"train": 9, "test": 3})

    dataset = load_dataset("frey-face", tmp_path, download=False)

    # the documented split: train_test_split(range(N), test_size=n_test, random_state=0)
    train_index, test_index = train_test_split(np.arange(12), test_size=3, random_state=0)
    flat = torch.from_numpy(faces.reshape(12, 560))
    assert torch.equal(dataset.splits["train"].images, flat[train_index])  # 8-bit, in its native form
    assert torch.equal(dataset.splits["test"].images, flat[test_index])
    assert dataset.splits["train"].labels is None
    assert dataset.likelihood == "gaussian" and dataset.image_shape == FREY_SHAPE and dataset.levels == 256


@pytest.mark.algebra
def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


# ---------------------------------------------------------------- downloads (served from 127.0.0.1)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder, base URL) of a local HTTP server serving that folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.mark.algebra
def test_download_fetches_missing_files_atomically(tmp_path, monkeypatch, http_root):
    served, url = http_root
    files = tiny_mnist_files(np.random.default_rng(0))
    for name, data in files.items():
        write(served / name, data)
    use_tiny_spec(monkeypatch, "mnist", files, {"train": 5, "test": 3})
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (url + "absent/", url))  # first mirror 404s
    data_dir = tmp_path / "data"
    write(data_dir / "mnist" / "train-labels-idx1-ubyte.gz", files["train-labels-idx1-ubyte.gz"])

    dataset = load_dataset("mnist", data_dir)

    assert sorted(os.listdir(data_dir / "mnist")) == sorted(files)  # no temporary files left
    for name, data in files.items():
        assert (data_dir / "mnist" / name).read_bytes() == data
    assert dataset.splits["train"].images.shape == (5, 784)


@pytest.mark.algebra
def test_download_rejects_wrong_bytes(tmp_path, monkeypatch, http_root):
    served, url = http_root
    files = tiny_mnist_files(np.random.default_rng(0))
    use_tiny_spec(monkeypatch, "mnist", files, {"train": 5, "test": 3})
    for name, data in files.items():
        write(served / name, data[:-1] + b"x")
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (url,))

    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path / "data")

    assert "download failed" in assert_one_line(err) and "sha256 mismatch" in str(err.value)
    assert os.listdir(tmp_path / "data" / "mnist") == []


@pytest.mark.algebra
def test_download_interrupted_leaves_nothing(tmp_path, monkeypatch):
    class DroppedResponse:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            raise http.client.IncompleteRead(b"partial")

    files = tiny_mnist_files(np.random.default_rng(0))
    use_tiny_spec(monkeypatch, "mnist", files, {"train": 5, "test": 3})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: DroppedResponse())

    with pytest.raises(DataError, match="IncompleteRead"):
        load_dataset("mnist", tmp_path)

    assert os.listdir(tmp_path / "mnist") == []


@pytest.mark.algebra
def test_offline_download_gives_one_line_naming_files_and_folder(tmp_path, monkeypatch):
    mirrors = (_closed_port_url(), _closed_port_url())
    monkeypatch.setitem(datasets.MIRRORS, "mnist", mirrors)
    requested = []
    real_urlopen = urllib.request.urlopen

    def counting_urlopen(url, *args, **kwargs):
        requested.append(url)
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)

    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)

    message = assert_one_line(err)
    folder = tmp_path / "mnist"
    assert message.startswith(
        "mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"
        f" t10k-labels-idx1-ubyte.gz in {folder} and download failed ("
    )
    assert f"{mirrors[1]}train-images-idx3-ubyte.gz" in message  # the reason names the URLs that failed
    assert message.endswith(
        f"put the files there (from {mirrors[0]} or {mirrors[1]})"
        " or point --data-dir / VAELAB_DATA at a folder that has them"
    )
    # once every mirror failed for one file, the others are not tried: offline, each try can take 30 s
    assert requested == [mirror + "train-images-idx3-ubyte.gz" for mirror in mirrors]
    assert os.listdir(folder) == []


@pytest.mark.algebra
def test_download_disabled_never_touches_the_network(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=False)
    assert assert_one_line(err) == (
        f"mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"
        f" t10k-labels-idx1-ubyte.gz in {tmp_path / 'mnist'} and downloading is disabled; put the files there"
        " (from https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/)"
        " or point --data-dir / VAELAB_DATA at a folder that has them"
    )
    assert not (tmp_path / "mnist").exists()


@pytest.mark.algebra
def test_dataset_status_of_empty_folder(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    statuses = {status.name: status for status in dataset_status(tmp_path)}
    assert list(statuses) == list(DATASET_NAMES)
    assert statuses["digits"].available and statuses["digits"].files == ()
    for name in DATASET_NAMES[1:]:
        assert not statuses[name].available
        assert all(not f.present and f.sha256 is None and not f.matches for f in statuses[name].files)
    # a missing file is named by every form read: the plain .amat downloads give, or its .amat.gz
    assert [f.path for f in statuses["binarized-mnist"].files] == [
        f"binarized-mnist/binarized_mnist_{split}.amat[.gz]" for split in ("train", "valid", "test")
    ]
    assert os.listdir(tmp_path) == []


@pytest.mark.algebra
def test_missing_binarized_mnist_files_are_named_with_their_gz_form(tmp_path):
    (tmp_path / "binarized-mnist").mkdir()
    (tmp_path / "binarized-mnist" / "binarized_mnist_train.amat.gz").write_bytes(b"")  # present (checked later)
    with pytest.raises(DataError) as err:
        load_dataset("binarized-mnist", tmp_path, download=False)
    assert assert_one_line(err).startswith(
        f"binarized-mnist: missing binarized_mnist_valid.amat[.gz], binarized_mnist_test.amat[.gz] in {tmp_path / 'binarized-mnist'}"
    )


# ---------------------------------------------------------------- digits (embedded in scikit-learn)


@pytest.mark.algebra
def test_digits_split_and_values():
    dataset = load_dataset("digits", "/nonexistent/never/read")
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert train.images.shape == (1497, 64) and test.images.shape == (300, 64)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    all_images = torch.cat([train.images, test.images])
    assert dataset.levels == 17 and torch.equal(torch.unique(all_images), torch.arange(17, dtype=torch.uint8))
    assert torch.equal(torch.unique(dataset.unit_images("test")), torch.arange(17, dtype=torch.float32) / 16)
    # stratified: each class has its overall share of the 300 test images, up to rounding
    all_counts = torch.bincount(torch.cat([train.labels, test.labels]), minlength=10)
    test_counts = torch.bincount(test.labels, minlength=10)
    assert ((test_counts - all_counts * 300 / 1797).abs() <= 1).all()
    assert (dataset.image_shape, dataset.num_classes, dataset.files) == ((8, 8), 10, {})
    assert torch.equal(load_dataset("digits").splits["test"].labels, test.labels)  # fixed split


# ---------------------------------------------------------------- binarization


@pytest.mark.statistics
def test_binarize_sampling_modes():
    grey = torch.full((2000, 50), 0.3)
    for mode in ("dynamic", "static"):
        first = binarize(grey, mode, torch.Generator().manual_seed(0))
        again = binarize(grey, mode, torch.Generator().manual_seed(0))
        assert torch.equal(first, again)
        assert set(first.unique().tolist()) <= {0.0, 1.0}
        assert first.shape == grey.shape and first.dtype == grey.dtype
        # 100000 draws: the standard error of the mean is 0.0015, the tolerance about 6 of them
        assert abs(first.mean().item() - 0.3) < 0.01
    assert not torch.equal(first, binarize(grey, "dynamic", torch.Generator().manual_seed(1)))


@pytest.mark.algebra
def test_binarize_threshold_and_none_are_exact():
    images = torch.tensor([[0.0, 0.2, 0.5, 0.5001, 1.0]])
    assert torch.equal(binarize(images, "threshold", None), torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert binarize(images, "none", None) is images
    with pytest.raises(ConfigError, match="unknown binarization 'random'"):
        binarize(images, "random", None)
    assert BINARIZATIONS == ("dynamic", "static", "threshold", "none")


# ---------------------------------------------------------------- real files


def _require(shared_data_dir: Path, folder: str) -> None:
    if not (shared_data_dir / folder).is_dir():
        pytest.skip(f"no {folder}/ in {shared_data_dir}")


@pytest.mark.slow
@pytest.mark.e2e
def test_real_mnist(shared_data_dir):
    _require(shared_data_dir, "mnist")
    dataset = load_dataset("mnist", shared_data_dir, download=False)
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert train.images.shape == (60000, 784) and test.images.shape == (10000, 784)
    assert train.images.dtype == torch.uint8 and train.images.min() == 0 and train.images.max() == 255 and dataset.levels == 256
    assert abs(train.images.double().mean().item() - 33.3184) < 1e-4  # README: mean pixel 33.3184
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert dataset.files[str(shared_data_dir.absolute() / "mnist" / "train-images-idx3-ubyte.gz")] == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    assert len(dataset.files) == 4


@pytest.mark.slow
@pytest.mark.e2e
def test_real_binarized_mnist(shared_data_dir):
    _require(shared_data_dir, "binarized-mnist")
    dataset = load_dataset("binarized-mnist", shared_data_dir, download=False)
    assert {split: len(data.images) for split, data in dataset.splits.items()} == {
        "train": 50000, "valid": 10000, "test": 10000
    }
    train = dataset.splits["train"].images
    assert train.shape == (50000, 784) and ((train == 0) | (train == 1)).all()
    assert abs(train.double().mean().item() - 0.1306) < 1e-4
    assert dataset.is_binary and dataset.num_classes is None and len(dataset.files) == 3 and dataset.levels == 2


@pytest.mark.e2e
def test_real_frey_face(shared_data_dir):
    _require(shared_data_dir, "frey-face")
    dataset = load_dataset("frey-face", shared_data_dir, download=False)
    train, test = dataset.splits["train"].images, dataset.splits["test"].images
    assert train.shape == (1765, 560) and test.shape == (200, 560)
    # The README's reading without scipy: the bytes from offset 184 are the faces, each row-major.
    raw = (shared_data_dir / "frey-face" / "frey_rawface.mat").read_bytes()
    faces = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=184).reshape(1965, 560).copy())
    train_index, test_index = train_test_split(np.arange(1965), test_size=200, random_state=0)
    assert torch.equal(train, faces[train_index]) and torch.equal(test, faces[test_index])  # 8-bit, in its native form
    assert abs(faces.double().mean().item() - 154.4609) < 1e-4  # README: mean pixel 154.4609
    assert dataset.likelihood == "gaussian" and dataset.image_shape == FREY_SHAPE and dataset.levels == 256


@pytest.mark.e2e
def test_real_fashion_mnist_images_missing(shared_data_dir):
    _require(shared_data_dir, "fashion-mnist")
    if (shared_data_dir / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the Fashion-MNIST images are present here")
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", shared_data_dir, download=False)
    assert assert_one_line(err).startswith(
        "fashion-mnist: missing train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz"
        f" in {shared_data_dir.absolute() / 'fashion-mnist'} and downloading is disabled"
    )


@pytest.mark.e2e
def test_real_dataset_status(shared_data_dir):
    statuses = {status.name: status for status in dataset_status(shared_data_dir)}
    for name in ("digits", "mnist", "binarized-mnist", "frey-face"):
        if name == "digits" or (shared_data_dir / name).is_dir():
            assert statuses[name].available, name
    fashion = {f.path: f for f in statuses["fashion-mnist"].files}
    labels = fashion["fashion-mnist/train-labels-idx1-ubyte.gz"]
    if labels.present:
        assert labels.matches
        assert labels.sha256 == "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
    images = fashion["fashion-mnist/train-images-idx3-ubyte.gz"]
    assert statuses["fashion-mnist"].available == all(f.matches for f in fashion.values())
    if not images.present:
        assert images.sha256 is None and not images.matches and not statuses["fashion-mnist"].available


# ---------------------------------------------------------------- downloads capped at the expected size


class EndlessResponse:
    """An HTTP answer that never ends (and announces no length), counting the bytes handed out."""

    headers: dict[str, str] = {}

    def __init__(self):
        self.handed_out = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size=-1):
        size = 1 << 20 if size is None or size < 0 else size
        self.handed_out += size
        return b"x" * size


@pytest.mark.e2e
def test_a_download_larger_than_expected_is_stopped_at_the_expected_size(tmp_path, monkeypatch):
    from vaelab.data import download
    from vaelab.errors import DataError

    response = EndlessResponse()
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: response)
    with pytest.raises(DataError, match="more than the expected 10000 bytes"):
        download.download_file(["http://mirror/file"], tmp_path / "file", "0" * 64, size=10_000)
    assert response.handed_out <= 10_001
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_every_dataset_file_has_its_expected_size_and_the_shared_copies_match_it(shared_data_dir):
    from vaelab.data import datasets

    for name, spec in datasets.REGISTRY.items():
        for file in spec.files:
            assert file.size is not None, (name, file.name)
            local = shared_data_dir / spec.folder / file.name
            if local.is_file():
                assert local.stat().st_size == file.size, local
