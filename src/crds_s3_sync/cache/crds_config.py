"""The config files crds reads in a cache: the layout tag, bad files, and the
environment with which crds reads the cache offline."""

from pathlib import Path

from ..errors import SyncError
from ..rules.layout import Layout
from .durable import atomic_write

MODE_FILE = "ref_cache_subdir_mode"  # crds.core.config.CRDS_SUBDIR_TAG_FILE


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
