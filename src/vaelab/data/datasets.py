"""The datasets vaelab knows, by name: where their files come from and how they become tensors."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.data.download import (
    FileSpec,
    FileStatus,
    file_status,
    prepare_files,
    resolve_data_dir,
)
from vaelab.data.levels import reduce_bits
from vaelab.data.readers import read_amat, read_cifar_archive, read_frey_mat, read_labelled_images
from vaelab.data.splits import NUM_CLASSES, Dataset, Split, hold_out, refuse_valid_fraction
from vaelab.data.user import check_path, load_path, looks_like_path
from vaelab.errors import ConfigError

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{index}.bin" for index in range(1, 6))
CIFAR10_TEST_MEMBER = "cifar-10-batches-bin/test_batch.bin"

# Download addresses: dataset -> mirrors tried in order; a file is fetched from `<mirror><file name>`.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "binarized-mnist": ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
    "frey-face": ("https://cs.nyu.edu/~roweis/data/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded from a data folder without downloading."""

    name: str
    available: bool  # every file present with its expected sha256 (always True for digits)
    files: tuple[FileStatus, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one dataset.

    read: (this spec, FileSpec.name -> path of the verified file) -> splits.
    """

    folder: str  # sub-folder of the data folder that holds the files
    files: tuple[FileSpec, ...]
    split_sizes: dict[str, int]  # expected number of images per split
    image_shape: tuple[int, int]
    likelihood: str
    is_binary: bool
    read: Callable[["DatasetSpec", dict[str, Path]], dict[str, Split]]
    levels: int  # values a sub-pixel takes: the splits hold uint8 levels 0 .. levels - 1
    channels: int = 1


def _rows(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, ...] (channels first) -> uint8 [N, D], one flattened image a row (a copy: the
    readers' arrays may be read-only views of a file's bytes)."""
    return torch.from_numpy(np.array(images.reshape(len(images), -1), dtype=np.uint8))


def _read_digits(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Split]:
    """scikit-learn's embedded 8x8 digits (1797 images, values 0..16), split once with a fixed seed,
    stratified by label."""
    # imported here, not at the top: scikit-learn adds about 1.5 s to `import vaelab`
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = digits.data.astype(np.uint8), digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=spec.split_sizes["test"], random_state=0, stratify=labels
    )
    return {
        "train": Split(_rows(train_images), torch.from_numpy(train_labels)),
        "test": Split(_rows(test_images), torch.from_numpy(test_labels)),
    }


def _read_idx_dataset(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Split]:
    """MNIST-style IDX files: `train-*` for the train split, `t10k-*` for the test split."""
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_labelled_images(
            paths[f"{prefix}-images-idx3-ubyte.gz"],
            paths[f"{prefix}-labels-idx1-ubyte.gz"],
            count=spec.split_sizes[split],
            image_shape=spec.image_shape,
            num_classes=NUM_CLASSES,
        )
        splits[split] = Split(_rows(images), torch.from_numpy(labels.astype(np.int64)))
    return splits


def _read_binarized_mnist(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Split]:
    """One `.amat` file per split, already 0/1, no labels."""
    height, width = spec.image_shape
    splits = {}
    for split, rows in spec.split_sizes.items():
        values = read_amat(paths[f"binarized_mnist_{split}.amat"], rows=rows, cols=height * width)
        splits[split] = Split(_rows(values), None)
    return splits


def _read_frey_face(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Split]:
    """All faces from one MAT file, split once with a fixed seed; no labels."""
    from sklearn.model_selection import (
        train_test_split,  # imported here, see _read_digits
    )

    count = sum(spec.split_sizes.values())
    faces = read_frey_mat(paths["frey_rawface.mat"], count=count, image_shape=spec.image_shape)
    images = _rows(faces)
    train_index, test_index = train_test_split(
        np.arange(count), test_size=spec.split_sizes["test"], random_state=0
    )
    return {
        "train": Split(images[torch.from_numpy(train_index)], None),
        "test": Split(images[torch.from_numpy(test_index)], None),
    }


def _read_cifar10(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Split]:
    """CIFAR-10's binary archive, read in place: five train batches, then the test batch, each of
    as many records as the test split (10000)."""
    members = (*CIFAR10_TRAIN_MEMBERS, CIFAR10_TEST_MEMBER)
    batches = read_cifar_archive(paths[CIFAR10_ARCHIVE], members, records=spec.split_sizes["test"], shape=(spec.channels, *spec.image_shape))
    test_images, test_labels = batches.pop(CIFAR10_TEST_MEMBER)
    train_images, train_labels = (np.concatenate(parts) for parts in zip(*batches.values()))
    return {
        "train": Split(_rows(train_images), torch.from_numpy(train_labels.astype(np.int64))),
        "test": Split(_rows(test_images), torch.from_numpy(test_labels.astype(np.int64))),
    }


def _idx_files(files: dict[str, tuple[str, int]]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(name, sha256, size=size) for name, (sha256, size) in files.items())


def _amat_file(split: str, amat_sha256: str, gz_sha256: str, amat_size: int) -> FileSpec:
    name = f"binarized_mnist_{split}.amat"
    return FileSpec(name, amat_sha256, also_accepted=((f"{name}.gz", gz_sha256),), size=amat_size)


# sha256 values and sizes (bytes, a download's cap): those listed in the shared data README (shared/data/README.md), except the two
# Fashion-MNIST image files, which are absent there. Theirs come from tensorflow/datasets,
# tensorflow_datasets/url_checksums/fashion_mnist.txt (commit 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5),
# the file that README cites for the label files' sha256.
REGISTRY: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        folder="",
        files=(),
        split_sizes={"train": 1497, "test": 300},
        image_shape=(8, 8),
        likelihood="bernoulli",
        is_binary=False,
        read=_read_digits,
        levels=17,  # each pixel counts the set pixels of a 4x4 block, 0..16
    ),
    "mnist": DatasetSpec(
        folder="mnist",
        files=_idx_files({
            "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
            "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
            "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
            "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
        }),
        split_sizes={"train": 60000, "test": 10000},
        image_shape=(28, 28),
        likelihood="bernoulli",
        is_binary=False,
        read=_read_idx_dataset,
        levels=256,
    ),
    "fashion-mnist": DatasetSpec(
        folder="fashion-mnist",
        files=_idx_files({
            "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880),
            "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515),
            "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102),
            "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148),
        }),
        split_sizes={"train": 60000, "test": 10000},
        image_shape=(28, 28),
        likelihood="bernoulli",
        is_binary=False,
        read=_read_idx_dataset,
        levels=256,
    ),
    "binarized-mnist": DatasetSpec(
        folder="binarized-mnist",
        files=(
            # sha256 of the plain .amat (as downloaded), then of the `gzip -9 -n` copy
            _amat_file(
                "train",
                "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
                "af247bd6075cf9adc4715459dcd5f13eaa99a2c92d8d81379a05da94770b6c0e",
                78_400_000,  # bytes of the plain .amat
            ),
            _amat_file(
                "valid",
                "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
                "533b71bc0198f4d73c54ae5fe6c96fc08dc3cf1b3fae24c5521dbc0452507e38",
                15_680_000,  # bytes of the plain .amat
            ),
            _amat_file(
                "test",
                "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
                "32a3c54d03504632bf9f131b4a148c7567aa6fc87da017049b044bdc14c2a0f2",
                15_680_000,  # bytes of the plain .amat
            ),
        ),
        split_sizes={"train": 50000, "valid": 10000, "test": 10000},
        image_shape=(28, 28),
        likelihood="bernoulli",
        is_binary=True,
        read=_read_binarized_mnist,
        levels=2,
    ),
    "frey-face": DatasetSpec(
        folder="frey-face",
        files=(
            FileSpec("frey_rawface.mat", "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64", size=1_100_584),
        ),
        split_sizes={"train": 1765, "test": 200},
        image_shape=(28, 20),
        likelihood="gaussian",
        is_binary=False,
        read=_read_frey_face,
        levels=256,
    ),
    "cifar10": DatasetSpec(
        folder="cifar10",
        # the official binary archive; the site lists its md5, c32a1d4ab5d03f1284b67883e8d87530
        files=(FileSpec(CIFAR10_ARCHIVE, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", size=170_052_171),),
        split_sizes={"train": 50000, "test": 10000},
        image_shape=(32, 32),
        likelihood="discretized-logistic",
        is_binary=False,
        read=_read_cifar10,
        levels=256,
        channels=3,
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(REGISTRY)


def _spec(name: str) -> DatasetSpec:
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}, or give a path to a .npz file or a folder of images")
    return REGISTRY[name]


def check_dataset_name(name: str) -> None:
    """Raise, in one line, for a dataset name that is neither a known dataset nor an existing path
    (ConfigError listing the names; DataError for a path that does not exist or is neither a
    folder nor a regular file): checked before a run directory is made."""
    if name in REGISTRY:
        return
    if not looks_like_path(name):
        _spec(name)  # raises the unknown-dataset error
    check_path(Path(name).expanduser())


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    valid_fraction: float = 0.0,
    bits: int | None = None,
) -> Dataset:
    """Load a dataset by name from `<data folder>/<name>/` (see `resolve_data_dir`), or by path.

    A name that is not a known dataset and looks like a path (it has a '/', ends in .npz or
    exists) is read by :func:`vaelab.data.user.load_path`: a .npz file or a folder of images,
    whose missing test split is a ``test_fraction`` of its train split drawn with ``split_seed``.
    ``valid_fraction`` (0: none) of the train split, drawn with ``split_seed`` too, becomes the valid
    split of data without one (:func:`vaelab.data.splits.hold_out`). ``bits`` (None: the data's
    own) reduces 8-bit data to 2^bits levels (:func:`vaelab.data.levels.reduce_bits`).
    Missing files of a named dataset are downloaded when `download` is True, or when it is None
    and the environment variable VAELAB_OFFLINE is not set to 1; every file's sha256 is checked.
    Raises DataError (one line) for missing, corrupt or unexpected files, or ``bits`` of data that
    are not 8-bit; ConfigError for an unknown name.
    """
    if name not in REGISTRY and looks_like_path(name):
        return reduce_bits(load_path(name, test_fraction=test_fraction, split_seed=split_seed, valid_fraction=valid_fraction), bits)
    spec = _spec(name)
    refuse_valid_fraction(valid_fraction, spec.split_sizes, f"dataset {name}")  # before any download
    if download is None:
        download = os.environ.get("VAELAB_OFFLINE") != "1"
    files = {}
    if spec.files:
        folder = resolve_data_dir(data_dir) / spec.folder
        files = prepare_files(folder, spec.files, MIRRORS[name], dataset=name, download=download)
    splits = spec.read(spec, {key: file.path for key, file in files.items()})
    if valid_fraction:
        splits = hold_out(splits, "valid", valid_fraction, split_seed, name)
    dataset = Dataset(
        name=name,
        splits=splits,
        image_shape=spec.image_shape,
        likelihood=spec.likelihood,
        is_binary=spec.is_binary,
        files={str(file.path): file.sha256 for file in files.values()},
        channels=spec.channels,
        levels=spec.levels,
    )
    return reduce_bits(dataset, bits)


def dataset_status(data_dir: str | os.PathLike | None = None) -> list[DatasetStatus]:
    """For every known dataset: which of its files are in the data folder and whether their sha256
    matches. Reads the files, never downloads."""
    root = resolve_data_dir(data_dir)
    statuses = []
    for name in DATASET_NAMES:
        spec = REGISTRY[name]
        files = tuple(file_status(root, spec.folder, file) for file in spec.files)
        statuses.append(DatasetStatus(name, available=all(file.matches for file in files), files=files))
    return statuses
