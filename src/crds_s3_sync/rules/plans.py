"""The plan: every file a sync needs, as data.

Everything after the walk (dry run, skip-if-present, download, summary, cache
key, shard, check and purge) works on this list.
"""

import hashlib
from typing import NamedTuple, Protocol

from ..network.location import Place
from .layout import Kind, Layout, relative_path
from .server_config import FileMeta, ServerConfig
from .walker import Walk

SERVER_CONFIG = "server_config"


class Sources(Protocol):
    """Where a plan's files come from and go: the run's settings."""

    observatory: str
    layout: Layout
    config: Place
    mappings: Place
    references: Place
    pickles: Place


class FileSpec(NamedTuple):
    """A file of the plan. A tuple, not a frozen dataclass: made three times faster,
    which counts for the 37,000 of every HST context."""

    name: str
    kind: Kind
    size: int | None  # None: not in download_metadata, so the object's size is used
    sha1: str | None  # None: cannot be verified
    instrument: str | None
    source: Place
    path: str  # relative to the cache root, `/` between its parts (`relative_path`)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "size": self.size,
            "sha1": self.sha1,
            "path": str(self.path),
        }


def build_plan(
    walk: Walk,
    server_config: ServerConfig,
    server_config_bytes: bytes,
    settings: Sources,
) -> list[FileSpec]:
    """Mappings (or context pickles) first: they are small and make the cache usable
    early; then references."""
    metadata = server_config.metadata
    plan = [file_spec(settings, Kind.config, SERVER_CONFIG, None, FileMeta.of(server_config_bytes))]
    if walk.pickles:  # HST: the context pickles stand in for the mapping files
        plan += [
            file_spec(settings, Kind.pickle, name, None, meta)
            for name, meta in sorted(walk.pickles.items())
        ]
    else:
        plan += [
            file_spec(settings, Kind.mapping, name, None, metadata.get(name))
            for name in sorted(walk.mappings)
        ]
    plan += [
        file_spec(settings, Kind.reference, name, walk.references[name], metadata.get(name))
        for name in sorted(walk.references)
    ]
    return plan


def file_spec(
    settings: Sources, kind: Kind, name: str, instrument: str | None, meta: FileMeta | None
) -> FileSpec:
    """The plan's entry for a file; without `meta` (not in server_config) its size is
    the object's and it cannot be verified."""
    return FileSpec(
        name,
        kind,
        meta.size if meta else None,
        meta.sha1 if meta else None,
        instrument,
        _source(settings, kind),
        relative_path(kind, name, settings.observatory, settings.layout, instrument),
    )


def _source(settings: Sources, kind: Kind) -> Place:
    if kind is Kind.config:
        return settings.config
    if kind is Kind.pickle:
        return settings.pickles
    return settings.mappings if kind is Kind.mapping else settings.references


def cache_key(plan: list[FileSpec], observatory: str, layout: Layout) -> str:
    """A CI cache key: it changes exactly when the files the plan needs change.

    server_config is left out: its bytes change with every bucket update (its
    own timestamps) even when the selection's files do not.
    """
    lines = [f"{observatory} {layout.value}"]
    lines += sorted(
        f"{spec.path} {spec.sha1 or spec.size}" for spec in plan if spec.kind is not Kind.config
    )
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return f"crds-{observatory}-{layout.value}-{digest[:32]}"


def shard(plan: list[FileSpec], index: int, count: int) -> list[FileSpec]:
    """Shard `index` (1..count) of the plan."""
    return [spec for spec in plan if in_shard(spec, index, count)]


def in_shard(spec: FileSpec, index: int, count: int) -> bool:
    """Files go by a hash of their name, so a file stays in its shard as the plan
    grows. server_config is in every shard."""
    digest = hashlib.sha1(spec.name.encode()).digest()
    return spec.kind is Kind.config or int.from_bytes(digest[:8], "big") % count == index - 1
