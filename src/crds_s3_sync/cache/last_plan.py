"""The last plan made for this cache, remembered: the same command run again under
the same server_config does not plan again.

A plan follows from server_config's bytes and the command (which contexts, from
which bucket, into which layout): every bucket update rewrites server_config (its
own timestamps change with it), so while its SHA-1 is the same, so are the
contexts, their trees and every file's size and SHA-1. Planning every HST context
again from the mapping index still took 3 s of a re-run with nothing to do (514
trees, 1.3 million names, a listing of the bucket, server_config parsed); read
from here it is a tenth of that. What the cache holds is never taken from here:
the look at the cache that follows every plan still looks at every file.

One record is kept, the last command's, in `config/<obs>/crds-s3-sync-plan.json`,
and it holds only beside the mapping index it was planned with (`mapping_index`),
untouched: `--verify`, or an index removed or changed, plans afresh, checking every
mapping. Anything odd about the file makes it no record, never an error, and every
name in it is checked again as if it came from the bucket.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SyncError
from ..rules.layout import Kind
from ..rules.names import check_name
from ..rules.plans import FileSpec, Sources, file_spec
from .durable import atomic_write
from .mapping_index import NAME as INDEX

NAME = "crds-s3-sync-plan.json"
VERSION = 1


@dataclass(frozen=True)
class Plan:
    """What planning found: the contexts, whether they were read from pickles, every
    file they need, and server_config's bad files (for crds's bad_files.txt)."""

    contexts: list[str]
    pickles: bool
    needed: list[FileSpec]
    bad_files: list[str]


def request_key(config_bytes: bytes, command: object, settings: Sources) -> str:
    """What a plan follows from: server_config's bytes, the command's selection (its
    `repr`) and where the files come from and go."""
    where = [str(settings.config), str(settings.mappings), str(settings.references)]
    parts = [
        hashlib.sha1(config_bytes).hexdigest(),
        repr(command),
        settings.observatory,
        settings.layout.value,
        *where,
        str(settings.pickles),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load(cache: Path, settings: Sources, request: str) -> Plan | None:
    """The plan remembered for `request`, if it is the one kept."""
    try:
        document = json.loads((cache / "config" / settings.observatory / NAME).read_bytes())
        if document["version"] != VERSION or document["request"] != request:
            return None
        if document["index"] != _stamp(cache, settings.observatory):
            return None
        contexts = [check_name(name, "context") for name in document["contexts"]]
        bad_files = [name for name in document["bad_files"] if isinstance(name, str)]
        needed = _specs(document["files"], settings)
        return Plan(contexts, document["pickles"] is True, needed, bad_files)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, SyncError):
        return None


def save(cache: Path, settings: Sources, request: str, plan: Plan) -> None:
    """Keep `plan` as the one remembered, beside the mapping index as it is now
    (written whole and atomically: runs sharing the cache may save at once, and any
    of their plans is right for its request)."""
    lines = "\n".join(
        f"{spec.kind.value}\t{spec.name}\t{spec.instrument or ''}\t"
        f"{'' if spec.size is None else spec.size}\t{spec.sha1 or ''}"
        for spec in plan.needed
    )
    document = {
        "version": VERSION,
        "request": request,
        "index": _stamp(cache, settings.observatory),
        "contexts": plan.contexts,
        "pickles": plan.pickles,
        "bad_files": plan.bad_files,
        "files": lines,
    }
    path = cache / "config" / settings.observatory / NAME
    atomic_write(path, json.dumps(document, separators=(",", ":")).encode())


def _specs(text: str, settings: Sources) -> list[FileSpec]:
    """The plan's files from their lines; each place (kind and instrument) made once,
    as `file_spec` makes it: this is every file of a re-run."""
    places: dict[tuple[str, str], FileSpec] = {}
    specs = []
    for line in text.split("\n"):
        kind, name, instrument, size, sha1 = line.split("\t")
        place = places.get((kind, instrument))
        if place is None:
            checked = check_name(instrument, "instrument") if instrument else None
            place = file_spec(settings, Kind(kind), "", checked, None)
            places[kind, instrument] = place
        specs.append(
            FileSpec(
                check_name(name, "name"),
                place.kind,
                int(size) if size else None,
                sha1 or None,
                place.instrument,
                place.source,
                place.path + name,
            )
        )
    return specs


def _stamp(cache: Path, observatory: str) -> list[int] | None:
    """The mapping index as the file system sees it (a rewrite changes it)."""
    try:
        found = os.stat(cache / "config" / observatory / INDEX)
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ino]
