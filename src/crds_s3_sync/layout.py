"""Where each file lives in a CRDS cache, and the config files crds reads there.

The official client finds files with `crds.core.config.locate_file`; this module
mirrors its rules for the two layouts crds_s3_set offers: `flat`
(references/<obs>/<file>) and `instrument` (references/<obs>/<instrument>/<file>).
"""

import contextlib
import functools
import itertools
import os
import socket
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path, PurePosixPath

from .durable import settle
from .errors import SyncError

MODE_FILE = "ref_cache_subdir_mode"  # crds.core.config.CRDS_SUBDIR_TAG_FILE
_HOST = socket.gethostname().replace(".", "-")[:32]  # shared caches span machines


class Layout(StrEnum):
    """CRDS's `ref_cache_subdir_mode`: where references go under references/<obs>/."""

    flat = "flat"
    instrument = "instrument"


class Kind(StrEnum):
    mapping = "mapping"
    reference = "reference"
    pickle = "pickle"
    config = "config"

    @property
    def directory(self) -> str:
        """The cache's top-level directory for this kind (crds's own names)."""
        return "config" if self is Kind.config else f"{self.value}s"


def relative_path(
    kind: Kind, name: str, observatory: str, layout: Layout, instrument: str | None = None
) -> PurePosixPath:
    if kind is Kind.reference and layout is Layout.instrument and not instrument:
        raise SyncError(f"{name}: no instrument known, cannot place it in an instrument cache")
    return _directory(kind, observatory, layout, instrument) / name


@functools.cache
def _directory(
    kind: Kind, observatory: str, layout: Layout, instrument: str | None
) -> PurePosixPath:
    """Built once per directory: plans name thousands of files in a handful of them."""
    base = PurePosixPath(kind.directory, observatory)
    if kind is Kind.reference and layout is Layout.instrument:
        base /= instrument.lower()  # type: ignore[union-attr]  # checked by the caller
    return base


def cached_layout(cache: Path, observatory: str) -> str | None:
    """The layout a cache already has, as crds recorded it, or None."""
    mode_file = cache / "config" / observatory / MODE_FILE
    try:
        return mode_file.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SyncError(f"{mode_file}: cannot read ({exc.strerror})") from None


def check_cache_layout(cache: Path, observatory: str, layout: Layout) -> None:
    """Refuse to mix layouts: crds reads one mode per observatory from the cache."""
    mode_file = cache / "config" / observatory / MODE_FILE
    existing = cached_layout(cache, observatory)
    if existing and existing != layout.value:
        raise SyncError(
            f"{mode_file}: this cache is laid out {existing!r}; "
            f"use --layout {existing} or another --cache"
        )


def write_cache_config(cache: Path, observatory: str, layout: Layout, bad_files: list[str]) -> None:
    """Write bad_files.txt and ref_cache_subdir_mode as crds's cache_server_info does."""
    config_dir = cache / "config" / observatory
    atomic_write(config_dir / "bad_files.txt", "\n".join(bad_files).encode())
    write_cache_layout(cache, observatory, layout)


def write_cache_layout(cache: Path, observatory: str, layout: Layout) -> None:
    """The tag crds reads to find references: where they are, from now on."""
    atomic_write(cache / "config" / observatory / MODE_FILE, layout.value.encode())


_serial = itertools.count()


def crds_environment(cache: Path, observatory: str, layout: Layout) -> dict[str, str]:
    """What crds, and the pipelines through it, need to read this cache offline: the
    cache, local mode, the observatory (without it crds asks its server), a server URL
    crds takes as "no server", and the layout."""
    return {
        "CRDS_PATH": str(cache),
        "CRDS_MODE": "local",
        "CRDS_OBSERVATORY": observatory,
        "CRDS_SERVER_URL": f"https://{observatory}-crds-serverless.stsci.edu",
        "CRDS_REF_SUBDIR_MODE": layout.value,
    }


def temporary_name(final: Path) -> str:
    """A hidden name beside `final`: same file system, so the rename is atomic.

    Names from the bucket never start with '.', so this cannot collide with one;
    the host, process id and a counter keep concurrent writers apart. A string,
    not a Path: small files make this a hot path.
    """
    directory, name = os.path.split(final)
    return f"{directory}/.{name}.{_HOST}-{os.getpid()}-{next(_serial)}.tmp"


def remove_stale_temporaries(directories: Iterable[Path]) -> int:
    """Remove temporary files (`temporary_name`) left in `directories` by runs on this
    host that are gone (killed, or the machine lost power): the process id in the
    name no longer runs. Another host's, or a live process's, are left alone. Returns
    how many went."""
    removed = 0
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # not there yet
        for entry in entries:
            if _stale(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _stale(name: str) -> bool:
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    owner, _, serial = name[: -len(".tmp")].rpartition("-")
    owner, _, pid = owner.rpartition("-")
    if not (owner.endswith(f".{_HOST}") and pid.isdigit() and serial.isdigit()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """`path` holds `data` whole or not at all; flushed before it appears if `durable`
    (crds's config files; a resumable download's record need not be, as the file
    is hashed whole before it is used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        settle(fd, temp, path, durable)
    finally:
        Path(temp).unlink(missing_ok=True)
