"""What each mapping in the cache names, remembered, so a re-run need not parse it.

Parsing is most of a re-run with nothing to do: every JWST context is 2,489
mappings, about 0.3 ms of `ast` each. A mapping never changes under its name,
and server_config gives its SHA-1, so what a parse found can be kept beside
crds's own config files (`config/<obs>/crds-s3-sync-mappings.json`) keyed by
name and SHA-1, and trusted on a later run when server_config names the same
SHA-1 and the cached file has its size (the trust a re-run gives every file;
`--verify` re-hashes instead of using this). Anything odd about the file makes
it empty, never an error: it is only ever a shortcut.
"""

import json
from pathlib import Path

from ..errors import SyncError
from ..rules.mapping import Mapping
from ..rules.names import check_name
from .durable import atomic_write

NAME = "crds-s3-sync-mappings.json"
VERSION = 1


class MappingIndex:
    def __init__(self, path: Path, entries: dict[str, dict]) -> None:
        self.path = path
        self._entries = entries
        self._changed = False
        self._checked: set[str] = set()  # names found safe: most mappings share their children

    @classmethod
    def load(cls, cache: Path, observatory: str) -> "MappingIndex":
        path = cache / "config" / observatory / NAME
        try:
            document = json.loads(path.read_bytes())
            entries = document["mappings"] if document.get("version") == VERSION else {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def get(self, name: str, sha1: str) -> Mapping | None:
        """The mapping `name` as parsed from the bytes whose SHA-1 is `sha1`, if known;
        every name in it is checked again, as a parse would."""
        entry = self._entries.get(name)
        try:
            if entry["sha1"] != sha1:
                return None
            mapping = Mapping(
                name,
                str(entry["level"]),
                entry["instrument"] if isinstance(entry["instrument"], str) else None,
                tuple(entry["mappings"]),
                tuple(entry["references"]),
            )
            for child in (*mapping.mappings, *mapping.references):
                if child not in self._checked:
                    check_name(child, "name")
                    self._checked.add(child)
        except (TypeError, KeyError, SyncError):
            return None
        return mapping

    def remember(self, mapping: Mapping, sha1: str) -> None:
        entry = {
            "sha1": sha1,
            "level": mapping.level,
            "instrument": mapping.instrument,
            "mappings": list(mapping.mappings),
            "references": list(mapping.references),
        }
        if self._entries.get(mapping.name) != entry:
            self._entries[mapping.name] = entry
            self._changed = True

    def save(self) -> None:
        """Write it if anything was learned (atomically: processes sharing the cache
        may save at once, and any of their versions is right)."""
        if self._changed:
            document = {"version": VERSION, "mappings": self._entries}
            atomic_write(self.path, json.dumps(document, separators=(",", ":")).encode())
            self._changed = False
