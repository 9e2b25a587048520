"""A cache's references moved into the other layout, as `crds sync --organize` does.

Each file is moved by one rename, so it is at all times under one name or the
other, never half; crds, reading by the layout tag, finds the moved files only
once the tag says the new layout, which is written last (`layout`). A file's
instrument comes from the plan, else from CRDS's naming (`jwst_nirspec_...`);
a file with neither stays where it is, and is counted. Run it alone: a sync
writing the old layout at the same time would put files where the new one does
not look.
"""

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SyncError
from ..rules.layout import Kind, Layout


@dataclass
class Moves:
    moved: int = 0
    unknown: list[str] = field(default_factory=list)  # no instrument known: left in place


def organize(
    cache: Path, observatory: str, target: Layout, instruments: dict[str, str], dry_run: bool
) -> Moves:
    """Move every reference of `observatory` to where `target` keeps it."""
    root = cache / Kind.reference.directory / observatory
    moves = Moves()
    for directory, _, files in os.walk(root):
        for name in files:
            if name.startswith("."):
                continue  # another run's work in progress
            here = Path(directory, name)
            instrument = instruments.get(name) or _named_instrument(name, observatory)
            if target is Layout.instrument and not instrument:
                moves.unknown.append(name)
                continue
            there = root / instrument.lower() / name if target is Layout.instrument else root / name
            if there == here:
                continue
            moves.moved += 1
            if not dry_run:
                _move(here, there)
    if not dry_run and target is Layout.flat and root.is_dir():
        for directory in (entry for entry in root.iterdir() if entry.is_dir()):
            with contextlib.suppress(OSError):  # not empty: another run's, or not ours
                directory.rmdir()  # an emptied instrument directory
    return moves


def _move(here: Path, there: Path) -> None:
    try:
        there.parent.mkdir(exist_ok=True)
        os.replace(here, there)
    except OSError as exc:
        raise SyncError(f"{here}: cannot move it to {there.parent}: {exc.strerror}") from None


def _named_instrument(name: str, observatory: str) -> str | None:
    """`nirspec` from `jwst_nirspec_flat_0001.fits`: CRDS's names for JWST and Roman."""
    parts = name.split("_")
    return parts[1] if len(parts) > 2 and parts[0] == observatory else None
