"""The cache held against the plan: what is missing or corrupt, and what is not needed.

`--check` and `--repair` use `check`; `--purge` uses `unneeded`. Both only look
where the plan's files live: `mappings/`, `references/` and `pickles/` of one
observatory, never the rest of a (possibly shared) cache.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Mismatch, SyncError
from ..rules.layout import Kind
from ..rules.plans import FileSpec
from .locks import lock_held, lock_path

if TYPE_CHECKING:
    from .verified import VerifiedIndex

HASH_BLOCK = 4 << 20
# Kinds whose directory belongs to the plan; config/ holds crds's own files too.
PURGEABLE = (Kind.mapping, Kind.reference, Kind.pickle)


@dataclass(frozen=True)
class Problem:
    spec: FileSpec
    kind: str  # "missing" or "corrupt"
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.spec.name, "path": self.spec.path, "problem": self.kind}


def check(
    plan: list[FileSpec], cache: Path, verify: bool, index: "VerifiedIndex | None" = None
) -> list[Problem]:
    """Every planned file that is absent or wrong: by size, and by SHA-1 if `verify`
    or if `index` says the file changed since it was verified (`verified`, which
    learns what each valid file looks like now).

    Blocking (it may hash gigabytes): run it in a worker thread.
    """
    problems = []
    listings: dict[str, set[str] | None] = {}
    root = os.fspath(cache)
    for spec in plan:
        path = f"{root}/{spec.path}"
        try:
            names = _listing(listings, path.rpartition("/")[0])
            if names is not None and spec.name not in names:
                raise FileNotFoundError
            found = os.stat(path)
        except FileNotFoundError:
            problems.append(Problem(spec, "missing", "not in the cache"))
            if index is not None:
                index.forget(spec.path)
            continue
        except OSError as exc:
            raise SyncError(f"{path}: cannot look at it: {exc.strerror}") from None
        rehash = verify or (index is not None and index.changed(spec, found))
        try:
            wrong = _wrong(path, found.st_size, spec.size, spec.sha1 if rehash else None)
        except OSError as exc:  # another user's, say: to be fetched again, if we may
            wrong = f"cannot read it: {exc.strerror}"
        if wrong:
            problems.append(Problem(spec, "corrupt", wrong))
        elif index is not None:
            index.saw(spec, found)
    return problems


def _listing(listings: dict[str, set[str] | None], directory: str) -> set[str] | None:
    """The names in `directory`, read once: a name not there needs no stat (thousands
    of missing files in an empty cache were a stat each). None where it cannot be
    listed: then each file is looked at by itself, as before."""
    if directory not in listings:
        try:
            listings[directory] = set(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            listings[directory] = set()
        except OSError:
            listings[directory] = None
    return listings[directory]


def defect(path: Path, size: int | None, sha1: str | None) -> tuple[str, str] | None:
    """What is wrong with the cached file at `path`, as ("missing" | "corrupt",
    detail), or None if it has `size` and `sha1` (each checked unless None)."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "missing", "not in the cache"
    wrong = _wrong(path, actual, size, sha1)
    return ("corrupt", wrong) if wrong else None


def _wrong(path: str | Path, actual: int, size: int | None, sha1: str | None) -> str | None:
    if size is not None and actual != size:
        return f"{actual} bytes, expected {size}"
    if sha1 is not None and (digest := _sha1_of_file(path)) != sha1:
        return f"SHA-1 {digest}, expected {sha1}"
    return None


def unneeded(
    plan: list[FileSpec], cache: Path, observatory: str, kinds: tuple[Kind, ...] = PURGEABLE
) -> list[Path]:
    """Files under the plan's directories that the plan does not name, sorted.

    Hidden files are another run's work in progress and stay, except the part
    files of a large download that is no longer planned. Symbolic links are
    listed (and so removed) as links, never followed.
    """
    needed = {cache / spec.path for spec in plan}
    found = []
    for kind in kinds:
        root = cache / kind.directory / observatory
        for directory, _, files in os.walk(root):
            for name in files:
                path = Path(directory, name)
                if path not in needed and _is_purgeable(path, needed):
                    found.append(path)
    return sorted(found)


def remove(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise SyncError(f"{path}: cannot remove it: {exc.strerror}") from None


def _is_purgeable(path: Path, needed: set[Path]) -> bool:
    """Visible files, and the part files (`.NAME.part`, `.NAME.part.json`) of files
    no longer planned that no run is fetching (holding `.NAME.lock`). Lock files
    nobody holds go by the sweep (`workfiles`)."""
    if not path.name.startswith("."):
        return True
    for suffix in (".part", ".part.json"):
        if path.name.endswith(suffix):
            final = path.with_name(path.name[1 : -len(suffix)])
            return final not in needed and not lock_held(lock_path(final))
    return False


def _sha1_of_file(path: str | Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def check_received(spec: FileSpec, received: int, size: int, sha1: str) -> None:
    """Bytes just fetched against the plan: a `Mismatch` (worth fetching again) if
    their count or SHA-1 is not what server_config says."""
    if received != size:
        raise Mismatch(f"{spec.name}: received {received} bytes, expected {size}")
    if spec.sha1 is not None and sha1 != spec.sha1:
        raise Mismatch(f"{spec.name}: SHA-1 {sha1} does not match {spec.sha1}")
