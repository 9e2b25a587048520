"""Where each file lives in a CRDS cache: crds's own rules of placement.

The official client finds files with `crds.core.config.locate_file`; this module
mirrors its rules for the two layouts crds_s3_set offers: `flat`
(references/<obs>/<file>) and `instrument` (references/<obs>/<instrument>/<file>).
"""

import functools
from enum import StrEnum

from ..errors import SyncError


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
) -> str:
    """Where `name` goes in the cache, relative to its root, with `/` between parts
    (a string, not a path object: plans name every HST reference, 37,000 files)."""
    if kind is Kind.reference and layout is Layout.instrument and not instrument:
        raise SyncError(f"{name}: no instrument known, cannot place it in an instrument cache")
    return f"{_directory(kind, observatory, layout, instrument)}/{name}"


@functools.cache
def _directory(kind: Kind, observatory: str, layout: Layout, instrument: str | None) -> str:
    base = f"{kind.directory}/{observatory}"
    if kind is Kind.reference and layout is Layout.instrument:
        base += f"/{instrument.lower()}"  # type: ignore[union-attr]  # checked by the caller
    return base
