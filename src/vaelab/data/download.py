"""Where dataset files live, checking their sha256, and fetching missing ones atomically.

A dataset's files sit in `<data folder>/<dataset folder>/<file name>`. Every file is checked
against its published sha256 before it is read. A download streams into a temporary file in
the same folder and is renamed into place only once its sha256 matched, so a file at its final
name is always complete.
"""

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vaelab.errors import DataError

DATA_DIR_ENV = "VAELAB_DATA"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder, as an absolute path: `data_dir` if given, else `$VAELAB_DATA`,
    else `$XDG_CACHE_HOME/vaelab`, else `~/.cache/vaelab`."""
    if data_dir is not None:
        path = Path(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        path = Path(os.environ[DATA_DIR_ENV])
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]) / "vaelab"
    else:
        path = Path.home() / ".cache" / "vaelab"
    return path.expanduser().absolute()


@dataclass(frozen=True)
class FileSpec:
    """One file a dataset needs.

    `name`, `sha256` and `size` (bytes; None: not known) describe the file as downloads produce it
    (fetched as `<mirror><name>`); a download is stopped as soon as it exceeds `size`.
    `also_accepted` lists other (name, sha256) forms read instead when present, e.g. a gzipped copy.
    """

    name: str
    sha256: str
    also_accepted: tuple[tuple[str, str], ...] = ()
    size: int | None = None

    def forms(self) -> tuple[tuple[str, str], ...]:
        """Every accepted (name, sha256), in order of preference."""
        return ((self.name, self.sha256), *self.also_accepted)

    def accepted_names(self) -> str:
        """Every accepted name, for messages about a missing file: `x.amat[.gz]` where the other
        names extend `name`, else the names joined by ' or '."""
        others = [other for other, _ in self.also_accepted]
        if all(other.startswith(self.name) for other in others):
            return self.name + "".join(f"[{other.removeprefix(self.name)}]" for other in others)
        return " or ".join((self.name, *others))


@dataclass(frozen=True)
class LocalFile:
    """A file on disk whose sha256 matched."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class FileStatus:
    """What `dataset_status` found for one expected file."""

    path: str  # relative to the data folder ("mnist/t10k-labels-idx1-ubyte.gz"); when absent, every accepted name ("….amat[.gz]")
    present: bool
    sha256: str | None  # None when absent
    matches: bool  # present with the expected sha256


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    return digest.hexdigest()


def _present_form(folder: Path, file: FileSpec) -> tuple[Path, str] | None:
    """(path, expected sha256) of the first accepted form of `file` present in `folder`, if any."""
    for name, sha256 in file.forms():
        if (folder / name).is_file():
            return folder / name, sha256
    return None


def file_status(data_dir: Path, folder: str, file: FileSpec) -> FileStatus:
    """Presence and checksum of one expected file, reading it but never downloading."""
    found = _present_form(data_dir / folder, file)
    if found is None:
        return FileStatus(f"{folder}/{file.accepted_names()}", present=False, sha256=None, matches=False)
    path, expected = found
    actual = sha256_file(path)
    return FileStatus(f"{folder}/{path.name}", present=True, sha256=actual, matches=actual == expected)


def download_file(
    urls: Sequence[str], dest: Path, sha256: str, *, size: int | None = None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> None:
    """Fetch `dest` from the first of `urls` that serves bytes with the expected sha256 (and no
    more than `size` bytes, when given: a larger answer is stopped there, not written to the end).

    Raises DataError listing why each URL failed; then nothing is left at `dest` or beside it.
    """
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, sha256, timeout, size)
            return
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
            failures.append(f"{url}: {' '.join(str(err).split()) or type(err).__name__}")
    raise DataError("; ".join(failures) or f"{dest.name}: no download address known")


def _fetch(url: str, dest: Path, sha256: str, timeout: float, size: int | None = None) -> None:
    """Stream `url` into a temporary file beside `dest`, hashing as it goes; rename it into place
    only when the sha256 matches (ValueError otherwise, and as soon as more than `size` bytes
    arrive). The temporary file never outlives the call."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            if size is not None and announced and announced.isdigit() and int(announced) > size:
                raise ValueError(f"announces {int(announced)} bytes, more than the expected {size}")
            # never ask for more than one byte past the expected size: a larger answer stops there
            while chunk := response.read(_CHUNK_BYTES if size is None else min(_CHUNK_BYTES, size + 1 - received)):
                received += len(chunk)
                if size is not None and received > size:
                    raise ValueError(f"more than the expected {size} bytes; stopped")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ValueError(f"sha256 mismatch (expected {sha256}, got {digest.hexdigest()})")
        os.replace(partial, dest)
    finally:
        Path(partial).unlink(missing_ok=True)  # no-op after a successful os.replace


def prepare_files(
    folder: Path, files: Sequence[FileSpec], mirrors: Sequence[str], *, dataset: str, download: bool
) -> dict[str, LocalFile]:
    """Find each of `files` in `folder`, downloading missing ones from `mirrors` if `download`,
    and check every sha256.

    Returns: FileSpec.name -> the verified file (which may be an `also_accepted` form).
    Raises DataError, one line: which files are missing and where to put them, or which file
    has the wrong sha256.
    """
    missing = [file for file in files if _present_form(folder, file) is None]
    failure = "downloading is disabled"
    if download:
        for file in list(missing):
            try:
                download_file([mirror + file.name for mirror in mirrors], folder / file.name, file.sha256, size=file.size)
            except DataError as err:
                failure = f"download failed ({err})"
                break  # most likely offline: do not wait on the other files' mirrors too
            missing.remove(file)
    if missing:
        names = ", ".join(file.accepted_names() for file in missing)
        raise DataError(
            f"{dataset}: missing {names} in {folder} and {failure}; put the files there"
            f" (from {' or '.join(mirrors)}) or point --data-dir / {DATA_DIR_ENV} at a folder that has them"
        )
    verified = {}
    for file in files:
        path, expected = _present_form(folder, file)
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(
                f"{path}: sha256 mismatch (expected {expected}, got {actual}); delete it to download again"
            )
        verified[file.name] = LocalFile(path, actual)
    return verified
