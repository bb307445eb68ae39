"""Datasets for vaelab: loading by name, verifying and downloading files, binarizing.

Every dataset comes as images [N, D] per split ('train', 'test', and 'valid' where it has one),
uint8 levels for discrete data and float32 in [0, 1] for continuous data (``Dataset.levels``
says which; ``to_unit_interval`` gives what a model sees), with int64 labels [N] where it is labelled. Files live in
`<data folder>/<dataset>/`; the data folder is `--data-dir`, else `$VAELAB_DATA`, else
`$XDG_CACHE_HOME/vaelab` or `~/.cache/vaelab`.
"""

from vaelab.data.binarize import BINARIZATIONS, binarize
from vaelab.data.datasets import DATASET_NAMES, DatasetStatus, dataset_status, load_dataset
from vaelab.data.download import FileStatus, resolve_data_dir
from vaelab.data.splits import Dataset, Split, to_unit_interval

__all__ = [
    "BINARIZATIONS",
    "DATASET_NAMES",
    "Dataset",
    "DatasetStatus",
    "FileStatus",
    "Split",
    "binarize",
    "dataset_status",
    "load_dataset",
    "resolve_data_dir",
    "to_unit_interval",
]
