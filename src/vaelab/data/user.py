"""The user's own data: a ``.npz`` file, a folder of images, NumPy arrays or a ``torch.utils.data.Dataset``.

Every source becomes the same :class:`~vaelab.data.splits.Dataset` as the built-in ones: images
``[N, D]`` per split, each image flattened channels-first (D = C * H * W, so a network reshapes a
row to ``[C, H, W]``), int64 labels ``[N]`` where there are any.

Accepted arrays: ``[N, H, W]`` (grey), ``[N, H, W, C]`` (C = 1, 3 or 4 channels, last, as image
files and NumPy hold them) or ``[N, D]`` (vectors); dtype uint8 (0..255: 8-bit data, 256 levels,
as image files give), boolean or integers 0/1 (binary data, 2 levels), both stored as uint8
levels, or floating point in [0, 1] (continuous data, stored as float32). Every split has one
kind. Without a test split a seeded fraction of the train split is held out as the test split
(``test_fraction``, ``split_seed``: both in the run's config.json), and, on request, a seeded
``valid_fraction`` of what is left as the valid split.

Every split holds at least 2 images: each evaluated split is reported as a mean with its
standard error, which one image cannot give.

Memory: the splits of discrete data are held as uint8, 1 byte a pixel (60,000 28x28 images take
47 MB, 50,000 32x32x3 ones 154 MB), those of continuous data as float32, 4 bytes a pixel. A data set larger than
about a third of the machine's memory does not fit (there is no streaming from disk); one whose
declared size (the ``.npy`` headers of a ``.npz``, the image headers of a folder) exceeds the
memory available is refused before anything is decoded.

Malformed files (empty, truncated, not a zip, a ``.npy`` header declaring more than its member
holds, object arrays, an image PIL cannot decode or that declares more pixels than PIL's
``Image.MAX_IMAGE_PIXELS``) raise DataError naming the file; pickles are never loaded.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.data.splits import MIN_SPLIT_IMAGES, Dataset, Split, hold_out, refuse_valid_fraction
from vaelab.data.readers import read_regular_file
from vaelab.errors import DataError, one_line
from vaelab.likelihoods import LIKELIHOOD_NAMES
from vaelab.machine import available_memory

SPLIT_NAMES = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
NPZ_KEYS = frozenset({*SPLIT_NAMES, *(f"{split}_labels" for split in SPLIT_NAMES), "likelihood"})
FLOAT32_BYTES = 4  # a continuous value as stored; a discrete one takes a byte
# What reading a malformed .npz can raise: zipfile (BadZipFile; NotImplementedError for an unknown
# compression, RuntimeError for an encrypted member), zlib and EOFError (truncated deflate data),
# numpy.lib.format (ValueError for a bad magic string, header or short data), OSError.
_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError, RuntimeError)


def looks_like_path(name: str) -> bool:
    """True when a dataset name is meant as a path: it has a separator, ends in .npz, or exists."""
    return os.sep in name or "/" in name or name.endswith(".npz") or os.path.exists(name)


def load_path(path: str | os.PathLike, *, test_fraction: float = 0.1, split_seed: int = 0, valid_fraction: float = 0.0) -> Dataset:
    """The dataset at ``path``: a ``.npz`` file or a folder of images (see the module docstring).

    Raises DataError (one line) when the path is missing or its contents are not usable.
    """
    path = Path(path).expanduser().absolute()
    check_path(path)
    if path.is_dir():
        arrays, digest = _read_image_folder(path)
        likelihood = "bernoulli"
    else:
        arrays, digest = _read_npz(path)
        likelihood = str(arrays.pop("likelihood", "bernoulli"))
        if likelihood not in LIKELIHOOD_NAMES:
            raise DataError(f"{path}: 'likelihood' must be one of {', '.join(LIKELIHOOD_NAMES)} (got {likelihood!r})")
    dataset = dataset_from_arrays(
        **arrays, name=str(path), likelihood=likelihood, test_fraction=test_fraction, split_seed=split_seed,
        valid_fraction=valid_fraction, where=str(path),
    )
    return _with_files(dataset, {str(path): digest})


def check_path(path: Path) -> None:
    """Raise DataError (one line) unless ``path`` is a folder or a regular file; only its status is
    read (a FIFO is never opened, so nothing blocks)."""
    usage = "a dataset path is a .npz file or a folder of images"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or folder ({usage})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({one_line(error)})") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise DataError(f"{path}: not a regular file (a FIFO, device or socket; {usage})")


def dataset_from_arrays(
    train: Any,
    test: Any = None,
    valid: Any = None,
    train_labels: Any = None,
    test_labels: Any = None,
    valid_labels: Any = None,
    *,
    name: str = "arrays",
    likelihood: str = "bernoulli",
    test_fraction: float = 0.1,
    split_seed: int = 0,
    valid_fraction: float = 0.0,
    where: str | None = None,
) -> Dataset:
    """A dataset from arrays (NumPy or torch) as in the module docstring, for use from Python.

    ``likelihood`` is the observation model the data is meant for (a
    :data:`vaelab.likelihoods.LIKELIHOOD_NAMES` name: 'bernoulli' for binary or grey images,
    'gaussian' for continuous values, ...). Without ``test`` a ``test_fraction`` of
    ``train`` (chosen with ``split_seed``) becomes the test split; then, without ``valid``, a
    ``valid_fraction`` of what is left (0: none) becomes the valid split.
    """
    where = where or name
    if likelihood not in LIKELIHOOD_NAMES:
        raise DataError(f"{where}: likelihood must be one of {', '.join(LIKELIHOOD_NAMES)} (got {likelihood!r})")
    given = {"train": (train, train_labels), "valid": (valid, valid_labels), "test": (test, test_labels)}
    splits: dict[str, Split] = {}
    shape = levels = None
    for split, (images, labels) in given.items():
        if images is None:
            if labels is not None:
                raise DataError(f"{where}: has {split}_labels but no {split} images")
            continue
        images, labels = _numpy(images), None if labels is None else _numpy(labels)
        flat, split_levels, split_shape = _to_rows(images, f"{where}: {split}")
        if len(flat) < MIN_SPLIT_IMAGES:
            raise DataError(f"{where}: the {split} split has {len(flat)} image; a split needs at least {MIN_SPLIT_IMAGES}, as it is reported as a mean with its standard error")
        if shape is not None and split_shape != shape:
            raise DataError(f"{where}: {split} images are {_shape_text(split_shape)}, train images {_shape_text(shape)}")
        if splits and split_levels != levels:
            raise DataError(f"{where}: {split} images hold {_levels_text(split_levels)}, train images {_levels_text(levels)}; give every split one dtype")
        shape, levels = split_shape, split_levels
        splits[split] = Split(flat, _labels(labels, len(flat), f"{where}: {split}_labels"))
    if "test" not in splits:
        splits = hold_out(splits, "test", test_fraction, split_seed, where)
    refuse_valid_fraction(valid_fraction, splits, where)
    if valid_fraction:
        splits = hold_out(splits, "valid", valid_fraction, split_seed, where)
    channels, height, width, flat_data = shape
    values = torch.cat([split.images for split in splits.values()])
    top = 1 if levels is None else levels - 1
    return Dataset(
        name=name,
        splits=splits,
        image_shape=(height, width),
        likelihood=likelihood,
        is_binary=bool(((values == 0) | (values == top)).all()),
        files={},
        channels=channels,
        flat=flat_data,
        num_labels=_num_labels(splits),
        levels=levels,
    )


def dataset_from_torch(dataset: Any, test: Any = None, **options: Any) -> Dataset:
    """A dataset from ``torch.utils.data.Dataset`` objects whose items are images (tensors or
    arrays, channels first ``[C, H, W]`` as torchvision gives them, or ``[H, W]``) or
    (image, label) pairs; ``options`` as :func:`dataset_from_arrays`."""
    arrays: dict[str, Any] = {}
    for split, source in (("train", dataset), ("test", test)):
        if source is None:
            continue
        items = [source[index] for index in range(len(source))]
        pairs = [item if isinstance(item, (tuple, list)) else (item, None) for item in items]
        images = np.stack([_numpy(image) for image, _ in pairs])
        if images.ndim == 4:  # torchvision's [N, C, H, W] -> the [N, H, W, C] of arrays and files
            images = images.transpose(0, 2, 3, 1)
        arrays[split] = images
        if all(label is not None for _, label in pairs):
            arrays[f"{split}_labels"] = np.array([int(label) for _, label in pairs])
    return dataset_from_arrays(**arrays, **options)


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _shape_text(shape: tuple[int, int, int, bool]) -> str:
    channels, height, width, flat = shape
    return f"vectors of {height * width}" if flat else f"{height}x{width}x{channels}"


def _levels_text(levels: int | None) -> str:
    return "continuous values" if levels is None else f"{levels} levels"


def _to_rows(images: np.ndarray, where: str) -> tuple[torch.Tensor, int | None, tuple[int, int, int, bool]]:
    """``[N, H, W]``, ``[N, H, W, C]`` or ``[N, D]`` -> rows ``[N, C*H*W]`` (channels first), their
    levels and (C, H, W, flat): uint8 levels (256 for uint8, 2 for boolean or 0/1 integers), or
    float32 in [0, 1] with levels None."""
    if images.ndim not in (2, 3, 4) or len(images) == 0:
        raise DataError(f"{where}: expected a non-empty array [N, H, W], [N, H, W, C] or [N, D] (got shape {list(images.shape)})")
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}: the last axis of [N, H, W, C] must be 1, 3 or 4 channels (got {images.shape[-1]})")
    if images.dtype == np.uint8:
        dtype, levels = np.uint8, 256
    elif images.dtype == np.bool_ or (np.issubdtype(images.dtype, np.integer) and ((images == 0) | (images == 1)).all()):
        dtype, levels = np.uint8, 2
    elif np.issubdtype(images.dtype, np.floating):
        dtype, levels = np.float32, None
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"{where}: floating-point images must lie in [0, 1] (got values in [{images.min()}, {images.max()}])")
    else:
        raise DataError(f"{where}: images must be uint8 (0-255), boolean or integers 0/1, or floats in [0, 1] (got {images.dtype})")
    if images.ndim == 2:
        shape = (1, *image_shape_of(images.shape[1]), True)
    else:
        if images.ndim == 3:
            images = images[..., None]
        images = images.transpose(0, 3, 1, 2)  # [N, C, H, W]: the layout convolutions take
        shape = (images.shape[1], images.shape[2], images.shape[3], False)
    return torch.from_numpy(np.ascontiguousarray(images.reshape(len(images), -1), dtype=dtype)), levels, shape


def _labels(labels: np.ndarray | None, count: int, where: str) -> torch.Tensor | None:
    if labels is None:
        return None
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{where}: labels must be {count} non-negative integers, one per image (got shape {list(labels.shape)}, {labels.dtype})")
    return torch.from_numpy(labels.astype(np.int64))


def _num_labels(splits: dict[str, Split]) -> int | None:
    labels = [split.labels for split in splits.values()]
    if any(label is None for label in labels):
        return None
    return int(max(label.max() for label in labels)) + 1


def _with_files(dataset: Dataset, files: dict[str, str]) -> Dataset:
    from dataclasses import replace

    return replace(dataset, files=files)


def _read_npz(path: Path) -> tuple[dict[str, Any], str]:
    """The arrays of a ``.npz`` and the sha256 of its bytes (read once).

    Each member's ``.npy`` header is read first: an object array (a pickle) is refused, and the
    declared shape x itemsize must be the bytes the member holds and, over all members, fit in
    the memory available, before any array is allocated.
    """
    data = read_regular_file(path)
    if not data:
        raise DataError(f"{path}: an empty file (0 bytes), not an .npz archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            unknown = sorted(set(members) - NPZ_KEYS)
            if "train" not in members or unknown:
                problem = f"unknown array(s) {', '.join(unknown)}" if unknown else "no 'train' array"
                raise DataError(f"{path}: {problem}; a dataset .npz holds train and optionally valid, test, their _labels and likelihood")
            declared = {key: _npy_header(archive, info, path) for key, info in members.items()}
            # each array as read, then its stored copy
            _check_fits(path, sum(math.prod(shape) * (dtype.itemsize + _stored_bytes(dtype)) for shape, dtype in declared.values()))
            arrays = {}
            for key, info in members.items():
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except _NPZ_ERRORS as error:
        raise DataError(f"{path}: not an .npz archive, or a truncated or corrupt one ({one_line(error)})") from None
    if "likelihood" in arrays:
        arrays["likelihood"] = arrays["likelihood"].item() if arrays["likelihood"].ndim == 0 else str(arrays["likelihood"])
    return arrays, hashlib.sha256(data).hexdigest()


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) that the ``.npy`` member ``info`` declares, checked against the bytes it holds."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in readers:
            raise DataError(f"{path}: {info.filename} is in .npy format {version[0]}.{version[1]}; vaelab reads 1.0 and 2.0")
        shape, _, dtype = readers[version](member)
        stored = info.file_size - member.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {info.filename} holds Python objects (a pickle), which vaelab never loads; store numeric arrays")
    needed = math.prod(shape) * dtype.itemsize
    if needed != stored:
        shape_text = "x".join(map(str, shape))
        raise DataError(f"{path}: {info.filename} declares shape {shape_text} of {dtype} ({needed:,} bytes) but holds {stored:,} bytes")
    return shape, dtype


def _stored_bytes(dtype: np.dtype) -> int:
    """Bytes a value of ``dtype`` takes once stored: float32 for floats, else a uint8 level."""
    return FLOAT32_BYTES if np.issubdtype(dtype, np.floating) else 1


def _check_fits(path: Path, needed: int) -> None:
    """Raise DataError when reading ``path`` needs more than the memory available (bytes, a lower estimate)."""

    available = available_memory()
    if available is not None and needed > available:
        raise DataError(f"{path}: needs at least {needed / 2**30:,.1f} GiB of memory to read, more than the {available / 2**30:,.1f} GiB available")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image_folder(root: Path) -> tuple[dict[str, Any], str]:
    """A folder of images: ``train/``, ``valid/``, ``test/`` sub-folders give splits (else the
    folder is the train split); within a split, class sub-folders give labels (sorted names ->
    0, 1, ...). Returns the arrays and one sha256 over every file's relative path and bytes."""
    split_folders = {split: root / split for split in SPLIT_NAMES if (root / split).is_dir()}
    if split_folders and "train" not in split_folders:
        raise DataError(f"{root}: has {', '.join(split_folders)}/ but no train/ sub-folder")
    split_folders = split_folders or {"train": root}
    classes = sorted({p.name for folder in split_folders.values() for p in folder.iterdir() if p.is_dir()} - set(SPLIT_NAMES))
    digest = hashlib.sha256()
    arrays: dict[str, Any] = {}
    mode = None
    for split, folder in split_folders.items():
        entries: list[tuple[Path, int | None]] = [(p, None) for p in _image_files(folder)]
        if classes:
            if entries:
                raise DataError(f"{folder}: holds both images and class sub-folders; put every image in a class folder")
            entries = [(p, label) for label, name in enumerate(classes) if (folder / name).is_dir() for p in _image_files(folder / name)]
        if not entries:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        images, mode = _read_images([p for p, _ in entries], root, digest, mode)
        arrays[split] = images
        if classes:
            arrays[f"{split}_labels"] = np.array([label for _, label in entries], dtype=np.int64)
    return arrays, digest.hexdigest()


def _read_images(paths: list[Path], root: Path, digest: Any, mode: str | None) -> tuple[np.ndarray, str]:
    """uint8 ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (colour) from image files, all of one size.

    Each file's header is read before its pixels: its size must be the first file's, the first
    one's must fit in memory N times, and one declaring more than PIL's ``Image.MAX_IMAGE_PIXELS``
    is refused by PIL at open (its warning made an error), before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    pictures = []
    for path in paths:
        data = read_regular_file(path)
        digest.update(str(path.relative_to(root)).encode() + b"\0" + hashlib.sha256(data).digest())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))  # reads the header: size and mode, no pixels
            with image:
                if not pictures:
                    width, height = image.size  # every value held three times, a byte each: decoded, stacked, stored
                    _check_fits(path.parent, len(paths) * width * height * len(image.getbands()) * 3)
                elif image.size != pictures[0].size:
                    raise DataError(
                        f"{path}: is {image.size[0]}x{image.size[1]}, the others {pictures[0].size[0]}x{pictures[0].size[1]}; all images must have one size"
                    )
                image.load()
                pictures.append(image.copy())
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise DataError(f"{path}: declares too many pixels for an image ({one_line(error)})") from None
        # PIL raises OSError for truncated data, SyntaxError/ValueError/EOFError from some decoders
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise DataError(f"{path}: not a readable image ({one_line(error)})") from None
    # grey when every image is grey, across splits (the first split read decides for the rest)
    mode = mode or ("L" if all(p.mode in ("1", "L", "I;16", "I") for p in pictures) else "RGB")
    return np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pictures]), mode


def image_shape_of(data_dim: int) -> tuple[int, int]:
    """A tile shape for vectors of ``data_dim``: square where it can be, else one row."""
    side = math.isqrt(data_dim)
    return (side, side) if side * side == data_dim else (1, data_dim)
