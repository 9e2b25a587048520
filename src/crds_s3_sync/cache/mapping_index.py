"""What each mapping in the cache names, remembered, so a re-run need not parse it.

Parsing is most of a re-run with nothing to do: every JWST context is 2,489
mappings, about 0.3 ms of `ast` each, and every HST context is a pickle of a few
MB, 0.1 s each. A mapping never changes under its name, and server_config gives
its SHA-1, so what a parse found can be kept beside crds's own config files
(`config/<obs>/crds-s3-sync-mappings.json`) keyed by name and SHA-1, and trusted
on a later run when server_config names the same SHA-1 and the cached file has
its size (the trust a re-run gives every file; `--verify` re-hashes instead of
using this). An HST context read from its pickle is kept the same way: its
mappings each under their own name, and under `<context>.pkl` the names in its
tree and the size and SHA-1 of the pickle, trusted while server_config gives the
context the same SHA-1 and the cached pickle has that size. Anything odd about
the file makes it empty, never an error: it is only ever a shortcut.

Each list of names is kept as one string, a name a line: every HST context's
rmaps name 1.3 million references between them (36,000 different ones), which
as JSON lists took 0.4 s to read and 100 MB to hold.
"""

import json
import sys
from pathlib import Path

from ..errors import SyncError
from ..rules.mapping import Mapping
from ..rules.names import check_name
from ..rules.server_config import FileMeta
from .durable import atomic_write

NAME = "crds-s3-sync-mappings.json"
VERSION = 2


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
            return Mapping(
                name,
                str(entry["level"]),
                entry["instrument"] if isinstance(entry["instrument"], str) else None,
                self._names(entry["mappings"]),
                self._names(entry["references"]),
            )
        except (TypeError, KeyError, AttributeError, SyncError):
            return None

    def tree(self, context: str, sha1: str) -> tuple[tuple[str, ...], FileMeta] | None:
        """The mappings of `context` as read from its pickle when server_config gave
        the context `sha1`, and the size and SHA-1 of that pickle, if known."""
        entry = self._entries.get(f"{context}.pkl")
        try:
            if entry["sha1"] != sha1:
                return None
            size, digest = entry["pickle"]
            if not isinstance(size, int) or not isinstance(digest, str):
                return None
            return self._names(entry["tree"]), FileMeta(size, digest)
        except (TypeError, KeyError, ValueError, AttributeError, SyncError):
            return None

    def _names(self, text: str) -> tuple[str, ...]:
        """Names kept as one string; each checked once (most are shared), one copy
        of each kept."""
        names = tuple(map(sys.intern, text.split("\n"))) if text else ()
        for name in set(names).difference(self._checked):
            check_name(name, "name")
            self._checked.add(name)
        return names

    def remember_tree(self, context: str, sha1: str, names: list[str], pickle: FileMeta) -> None:
        entry = {"sha1": sha1, "pickle": [pickle.size, pickle.sha1], "tree": "\n".join(names)}
        if self._entries.get(f"{context}.pkl") != entry:
            self._entries[f"{context}.pkl"] = entry
            self._changed = True

    def remember(self, mapping: Mapping, sha1: str) -> None:
        entry = {
            "sha1": sha1,
            "level": mapping.level,
            "instrument": mapping.instrument,
            "mappings": "\n".join(mapping.mappings),
            "references": "\n".join(mapping.references),
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
