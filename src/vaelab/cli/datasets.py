"""``vaelab datasets``: every dataset, whether its files are here, and their sha256."""

from __future__ import annotations

import argparse

from vaelab.cli.command import Command
from vaelab.cli.options import add_data_dir


def run(args: argparse.Namespace) -> int:
    from vaelab.data import dataset_status, resolve_data_dir

    print(f"data folder: {resolve_data_dir(args.data_dir)}")
    for status in dataset_status(args.data_dir):
        print(f"{status.name:16} {'available' if status.available else 'missing'}")
        for file in status.files:
            mark = "ok" if file.matches else ("missing" if not file.present else "CHECKSUM MISMATCH")
            print(f"  {file.path:48} {mark:18} {file.sha256 or ''}")
    return 0


COMMANDS = (
    Command(
        "datasets",
        "list datasets and their local files",
        "List every dataset, whether its files are present locally, and their sha256.",
        add_data_dir,
        run,
        "nothing was changed",
    ),
)
