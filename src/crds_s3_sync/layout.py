"""Where each file lives in a CRDS cache, and the config files crds reads there.

The official client finds files with `crds.core.config.locate_file`; this module
mirrors its rules for the two layouts crds_s3_set offers: `flat`
(references/<obs>/<file>) and `instrument` (references/<obs>/<instrument>/<file>).
"""

import functools
import os
from enum import StrEnum
from pathlib import Path, PurePosixPath

from .durable import settle, write_all
from .errors import SyncError
from .workfiles import temporary_name

MODE_FILE = "ref_cache_subdir_mode"  # crds.core.config.CRDS_SUBDIR_TAG_FILE


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


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """`path` holds `data` whole or not at all; flushed before it appears if `durable`
    (crds's config files; a resumable download's record need not be, as the file
    is hashed whole before it is used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            raise
        settle(fd, temp, path, durable)
    finally:
        Path(temp).unlink(missing_ok=True)
