"""Readers for the raw dataset file formats: IDX (MNIST), .amat (binarized MNIST), MAT (Frey faces),
CIFAR-10's binary archive.

Each reader returns a numpy uint8 array and checks everything it reads. Any file that is
unreadable, corrupt, truncated or holds something unexpected raises DataError with a one-line
message "<path>: <problem>". Expected sizes are parameters so that small test files can be read.
"""

import gzip
import io
import math
import os
import stat
import tarfile
import zlib
from pathlib import Path

import numpy as np

from vaelab.errors import DataError, one_line

IDX_UNSIGNED_BYTE = 0x08  # IDX data type code for uint8 values, the only one the datasets use


def read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, which must be a regular file: a FIFO, device or socket is refused
    before any read. It is opened with O_NONBLOCK, so a FIFO with no writer cannot block the open,
    and its type is checked on the open descriptor, which also catches a file swapped after an
    earlier check."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({one_line(err)})") from err
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise DataError(f"{path}: not a regular file")
        try:
            return stream.read()
        except OSError as err:
            raise DataError(f"{path}: cannot read ({one_line(err)})") from err


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when its name ends in `.gz`."""
    raw = read_regular_file(path)
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or truncated gzip data ({one_line(err)})") from err


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions, as a uint8 array of the stored shape.

    Layout: two zero bytes, the type code 0x08, `ndim`, then `ndim` big-endian uint32 sizes, then
    the values in row-major order, nothing after them.
    """
    data = read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header (truncated?)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{data[:4].hex()} must start with 0000)")
    if data[2] != IDX_UNSIGNED_BYTE:
        raise DataError(f"{path}: IDX data type code 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    if data[3] != ndim:
        raise DataError(f"{path}: IDX file has {data[3]} dimensions, expected {ndim}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header_size} bytes)")
    dims = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    payload, expected = len(data) - header_size, math.prod(dims)
    shape = "x".join(map(str, dims))
    if payload < expected:
        raise DataError(f"{path}: truncated: {payload} data bytes, but shape {shape} needs {expected}")
    if payload > expected:
        raise DataError(f"{path}: {payload - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(dims)


def read_idx_images(path: Path, *, count: int | None, image_shape: tuple[int, int]) -> np.ndarray:
    """IDX images, uint8 [count, height, width]; `count=None` accepts any number of images."""
    images = read_idx(path, ndim=3)
    if images.shape[1:] != image_shape:
        height, width = image_shape
        raise DataError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, expected {height}x{width}")
    if count is not None and len(images) != count:
        raise DataError(f"{path}: {len(images)} images, expected {count}")
    return images


def read_idx_labels(path: Path, *, count: int | None, num_classes: int) -> np.ndarray:
    """IDX class labels, uint8 [count] with values in 0..num_classes-1; `count=None` accepts any number."""
    labels = read_idx(path, ndim=1)
    if count is not None and len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels, expected {count}")
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{path}: label value {labels.max()} outside 0..{num_classes - 1}")
    return labels


def read_labelled_images(
    images_path: Path, labels_path: Path, *, count: int, image_shape: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A pair of IDX files: images uint8 [count, height, width] and their labels uint8 [count]."""
    images = read_idx_images(images_path, count=None, image_shape=image_shape)
    labels = read_idx_labels(labels_path, count=None, num_classes=num_classes)
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images, but {labels_path} has {len(labels)} labels")
    if len(images) != count:
        raise DataError(f"{images_path}: {len(images)} images, expected {count}")
    return images, labels


def read_amat(path: Path, *, rows: int, cols: int) -> np.ndarray:
    """A binarized-MNIST `.amat` (or `.amat.gz`) file as uint8 [rows, cols] of 0/1.

    The layout is exact: each line holds `cols` characters `0`/`1` separated by single spaces and
    ends with `\\n`, the last line included. So every line is `2 * cols` bytes, which lets the
    whole file be parsed as one strided array.
    """
    text = read_bytes(path)
    line_bytes = 2 * cols
    if len(text) % line_bytes == 0:
        grid = np.frombuffer(text, np.uint8).reshape(-1, line_bytes)
        values = grid[:, 0::2] - ord("0")  # uint8 arithmetic: anything but '0'/'1' ends up > 1
        spaces_ok = (grid[:, 1:-1:2] == ord(" ")).all() and (grid[:, -1] == ord("\n")).all()
        if spaces_ok and (values <= 1).all():
            if len(values) != rows:
                raise DataError(f"{path}: {len(values)} rows, expected {rows}")
            return values
    raise DataError(f"{path}: {_amat_layout_error(text, cols)}")


def _amat_layout_error(text: bytes, cols: int) -> str:
    """Where `text` first departs from the `.amat` layout, for the error message."""
    *lines, after_last_newline = text.split(b"\n")
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != cols:
            return f"line {number} has {len(tokens)} values, expected {cols}"
        not_binary = set(tokens) - {b"0", b"1"}
        if not_binary:
            return f"line {number} has the value {min(not_binary)[:20]!r}, expected 0 or 1"
        if line != b" ".join(tokens):
            return f"line {number} does not separate its values by single spaces"
    if after_last_newline:
        return f"line {len(lines) + 1} has no newline at its end (truncated?)"
    return f"not in the .amat layout ({cols} values 0/1 per line, separated by single spaces)"


def read_frey_mat(path: Path, *, count: int, image_shape: tuple[int, int]) -> np.ndarray:
    """The Frey faces MAT file: variable `ff`, uint8 [height * width, count] (one image per column),
    returned as uint8 [count, height, width]."""
    import scipy.io  # imported here, not at the top: it adds about 0.3 s to `import vaelab`

    try:
        contents = scipy.io.loadmat(path)
    except Exception as err:  # scipy's MAT parser raises many types on bad input (MatReadError, ...)
        raise DataError(f"{path}: not a readable MATLAB file ({one_line(err)})") from err
    if "ff" not in contents:
        found = ", ".join(sorted(key for key in contents if not key.startswith("__"))) or "none"
        raise DataError(f"{path}: no variable 'ff' (variables found: {found})")
    faces = contents["ff"]
    if faces.dtype != np.uint8:
        raise DataError(f"{path}: variable 'ff' has dtype {faces.dtype}, expected uint8")
    height, width = image_shape
    if faces.shape != (height * width, count):
        expected = (height * width, count)
        raise DataError(f"{path}: variable 'ff' has shape {faces.shape}, expected {expected}")
    return np.ascontiguousarray(faces.T).reshape(count, height, width)


def read_cifar_archive(
    path: Path, members: tuple[str, ...], *, records: int, shape: tuple[int, int, int], num_classes: int = 10
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10's binary ``.tar.gz``, read in one pass without extracting anything to disk: each of
    ``members`` holds ``records`` records of one label byte then C*H*W pixel bytes (channels first).

    Returns: member name -> (images uint8 [records, C, H, W], labels uint8 [records] in 0..num_classes-1).
    """
    record_bytes = 1 + math.prod(shape)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(read_regular_file(path)), mode="r|gz") as archive:  # a stream: one pass, in order
            for member in archive:
                if member.name not in members:
                    continue
                if not member.isfile() or member.size != records * record_bytes:
                    raise DataError(f"{path}: {member.name} holds {member.size} bytes, expected {records} records of {record_bytes}")
                data = archive.extractfile(member).read()
                if len(data) != member.size:
                    raise DataError(f"{path}: {member.name} is truncated ({len(data)} of {member.size} bytes)")
                table = np.frombuffer(data, np.uint8).reshape(records, record_bytes)
                found[member.name] = (table[:, 1:].reshape(records, *shape), table[:, 0])
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or truncated tar.gz archive ({one_line(err)})") from err
    missing = [name for name in members if name not in found]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} in the archive")
    for name, (_, labels) in found.items():
        if labels.max() >= num_classes:
            raise DataError(f"{path}: {name} has the label {labels.max()}, outside 0..{num_classes - 1}")
    return found
