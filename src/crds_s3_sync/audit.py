"""The cache held against the plan: what is missing or corrupt, and what is not needed.

`--check` and `--repair` use `check`; `--purge` uses `unneeded`. Both only look
where the plan's files live: `mappings/`, `references/` and `pickles/` of one
observatory, never the rest of a (possibly shared) cache.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .layout import Kind
from .plan import FileSpec

HASH_BLOCK = 4 << 20
# Kinds whose directory belongs to the plan; config/ holds crds's own files too.
PURGEABLE = (Kind.mapping, Kind.reference, Kind.pickle)


@dataclass(frozen=True)
class Problem:
    spec: FileSpec
    kind: str  # "missing" or "corrupt"
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.spec.name, "path": str(self.spec.path), "problem": self.kind}


def check(plan: list[FileSpec], cache: Path, verify: bool) -> list[Problem]:
    """Every planned file that is absent or wrong: by size, and by SHA-1 if `verify`.

    Blocking (it may hash gigabytes): run it in a worker thread.
    """
    problems = []
    for spec in plan:
        path = cache / spec.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(Problem(spec, "missing", "not in the cache"))
            continue
        if spec.size is not None and size != spec.size:
            problems.append(Problem(spec, "corrupt", f"{size} bytes, expected {spec.size}"))
        elif verify and spec.sha1 is not None and (digest := sha1_of_file(path)) != spec.sha1:
            problems.append(Problem(spec, "corrupt", f"SHA-1 {digest}, expected {spec.sha1}"))
    return problems


def unneeded(plan: list[FileSpec], cache: Path, observatory: str) -> list[Path]:
    """Files under the plan's directories that the plan does not name, sorted.

    Hidden files are another run's work in progress and stay, except the part
    files of a large download that is no longer planned. Symbolic links are
    listed (and so removed) as links, never followed.
    """
    needed = {cache / spec.path for spec in plan}
    found = []
    for kind in PURGEABLE:
        root = cache / kind.directory / observatory
        for directory, _, files in os.walk(root):
            for name in files:
                path = Path(directory, name)
                if path not in needed and _is_purgeable(path, needed):
                    found.append(path)
    return sorted(found)


def remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _is_purgeable(path: Path, needed: set[Path]) -> bool:
    """Visible files, and the part and lock files (`.NAME.part`, `.NAME.part.json`,
    `.NAME.lock`) of files no longer planned."""
    if not path.name.startswith("."):
        return True
    for suffix in (".part", ".part.json", ".lock"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[1 : -len(suffix)]) not in needed
    return False


def sha1_of_file(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
