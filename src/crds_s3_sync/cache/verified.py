"""What each cached file looked like when it was last verified, so a re-run can tell
a file changed in place from one left alone without reading either.

A re-run trusts a cached file of the right size (re-hashing HST's 4 TB would take
hours), which alone misses a file rewritten in place with the same size: a bad
copy, a broken CI cache restored, an edit. So whenever a file is verified, on
download or re-hash, its size, modification and change times and inode are
recorded in `config/<obs>/crds-s3-sync-verified.json`. A later run

- re-hashes a file whose size or modification time differs from its record (or
  whose record names another SHA-1);
- updates the record without re-hashing when only the inode or change time
  differs (a copy that kept its times, a `chmod`);
- checks a file with no record by size, and records it;
- trusts the rest.

The index is only ever a shortcut: lost, stale or corrupt it reads as empty (an
entry at a time), and each file falls back to its size; `--verify` re-hashes
everything. Runs sharing the cache merge their records into what is on disk
under the index's lock, so none drops another's.
"""

import json
import os
from pathlib import Path
from typing import Any

from ..errors import SyncError
from ..rules.plans import FileSpec
from .durable import atomic_write
from .locks import Locks

NAME = "crds-s3-sync-verified.json"
VERSION = 1
# size, mtime_ns, ctime_ns, inode, SHA-1: a list, as JSON gives it back. A malformed
# one is found when its file is looked at (and the file re-hashed), not by going
# through every record on loading: an HST cache holds 37,000 of them.
Record = list[Any]


class VerifiedIndex:
    def __init__(self, path: Path, records: dict[str, Record]) -> None:
        self.path = path
        self._records = records
        self._changed: dict[str, Record | None] = {}  # what this run learned; None: gone
        self._doubted: set[str] = set()

    @classmethod
    def load(cls, cache: Path, observatory: str) -> "VerifiedIndex":
        path = cache / "config" / observatory / NAME
        return cls(path, _read(path))

    def doubt(self, path: str) -> None:
        """Have `path` re-hashed whatever its record says (a mapping the walk found
        corrupt)."""
        self._doubted.add(path)

    @property
    def doubted(self) -> frozenset[str]:
        return frozenset(self._doubted)

    def changed(self, spec: FileSpec, found: os.stat_result) -> bool:
        """Whether the file at `spec.path` must be re-hashed to be trusted."""
        key = spec.path
        record = self._records.get(key)
        if key in self._doubted:
            return True
        if record is None:
            return False
        try:
            size, mtime, _, _, sha1 = record
        except (TypeError, ValueError):
            return True
        return size != found.st_size or mtime != found.st_mtime_ns or sha1 != spec.sha1

    def saw(self, spec: FileSpec, found: os.stat_result) -> None:
        """`spec`'s file is valid and looks like `found`: record that if it is news."""
        if spec.sha1 is None:
            return  # nothing to verify it against, now or later
        key = spec.path
        record = [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino, spec.sha1]
        if self._records.get(key) != record:
            self._records[key] = self._changed[key] = record
        self._doubted.discard(key)

    def forget(self, path: str) -> None:
        if path in self._records:
            del self._records[path]
            self._changed[path] = None

    async def save(self, locks: Locks) -> None:
        """Merge what this run learned into the index on disk, under its lock, and
        write it whole (`atomic_write`)."""
        if not self._changed:
            return
        try:
            async with locks.hold(self.path):
                records = _valid(_read(self.path))
                for key, record in self._changed.items():
                    if record is None:
                        records.pop(key, None)
                    else:
                        records[key] = record
                document = {"version": VERSION, "files": records}
                atomic_write(self.path, json.dumps(document, separators=(",", ":")).encode())
        except OSError as exc:
            raise SyncError(f"{exc.filename or self.path}: cannot write: {exc.strerror}") from None
        self._changed = {}


def _read(path: Path) -> dict[str, Record]:
    """The records on disk; none if the file is not what this module writes: never
    an error."""
    try:
        document = json.loads(path.read_bytes())
        files = document["files"] if document.get("version") == VERSION else {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _valid(records: dict[str, Record]) -> dict[str, Record]:
    """The well-formed records, as the index is written again: a malformed one is not
    kept (its file, looked at, is re-hashed and recorded afresh)."""
    return {
        key: value
        for key, value in records.items()
        if isinstance(value, list)
        and len(value) == 5
        and all(type(n) is int for n in value[:4])
        and isinstance(value[4], str)
    }
