"""Planning's reads: server_config, which contexts, and each mapping or context
pickle, from the cache when it already holds a valid copy, else from S3.

Each read is bounded (LIMITS): a hostile bucket cannot fill memory with a
"mapping"."""

import functools
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.mapping_index import MappingIndex
from ..engine.paced import Paced
from ..errors import FormatError, NotFound, SourceError, SyncError
from ..network.location import Place
from ..pool import Processes, cores
from ..rules.layout import Kind, relative_path
from ..rules.mapping import Mapping
from ..rules.pickles import TreeReader, from_worker, read_in_worker
from ..rules.plans import SERVER_CONFIG
from ..rules.server_config import FileMeta, ServerConfig, parse_server_config
from ..rules.walker import ReadTree, Selection, nearest, select_contexts
from .settings import Settings

# From this many context pickles to read, they are read on every core: a pickle is
# 0.1-0.2 s of CPU, starting the workers about as much.
POOL_FROM = 8

# The most a file read into memory for planning may be: many times the biggest real
# one (HST's server_config 2 MB, rmaps 0.4 MB, context pickles 4 MB).
LIMITS = {Kind.config: 64 << 20, Kind.mapping: 16 << 20, Kind.pickle: 256 << 20}


async def read_server_config(source: Paced, settings: Settings) -> bytes:
    try:
        return await source.read(settings.config, SERVER_CONFIG, LIMITS[Kind.config])
    except NotFound:
        raise SyncError(
            f"{settings.config_where}: no server_config there "
            "(check the bucket, prefix and observatory)"
        ) from None


def decode_server_config(data: bytes, settings: Settings) -> ServerConfig:
    where = settings.config_where
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: not UTF-8 text") from None
    config = parse_server_config(text, where)
    if config.observatory != settings.observatory:
        raise SyncError(
            f"{where} is for {config.observatory!r}, "
            f"not {settings.observatory!r}: check --observatory"
        )
    return config


async def choose_contexts(
    source: Paced, settings: Settings, selection: Selection, server_config: ServerConfig
) -> tuple[list[str], bool]:
    """The contexts to sync, and whether to walk them from pickles: when asked to, or
    when the bucket has pickles where mappings should be (HST's buckets). Costs no
    request beyond the listing --all and --last need, or one HEAD otherwise; none
    from a server, which lists its mappings in server_config and serves no pickles."""
    if settings.server:
        return select_contexts(selection, server_config, server_config.mappings), False
    pickles = settings.use_pickles
    if selection.all or selection.last:
        names = [] if pickles else await source.list_names(settings.mappings)
        if not any(name.endswith(".pmap") for name in names):
            pickled = await source.list_names(settings.pickles)
            contexts = [n.removesuffix(".pkl") for n in pickled if n.endswith(".pmap.pkl")]
            if contexts or pickles:
                return select_contexts(selection, server_config, contexts), True
        return select_contexts(selection, server_config, names), False
    contexts = select_contexts(selection, server_config, None)
    if not pickles:
        first = contexts[0]
        pickles = not await _exists(source, settings.mappings, first) and await _exists(
            source, settings.pickles, f"{first}.pkl"
        )
    return contexts, pickles


async def _exists(source: Paced, location: Place, name: str) -> bool:
    """Whether an object is there; S3 answers 403, not 404, to a reader who may not list."""
    try:
        await source.size(location, name)
    except SourceError:
        return False
    return True


async def _listed(source: Paced, location: Place) -> list[str]:
    """What is there, for a message naming what a missing name could have been meant
    as: none where the bucket does not let us list."""
    try:
        return await source.list_names(location)
    except SourceError:
        return []


@asynccontextmanager
async def tree_reader(contexts: int) -> AsyncIterator[ReadTree]:
    """How the walk reads context pickles: for a few, here, on the event loop; for
    many, in worker processes, one per core (started only if a pickle is read: a
    re-run that knows every context's tree starts none)."""
    if contexts < POOL_FROM or cores() < 2:
        reader = TreeReader()

        async def read_here(
            context: str, data: bytes, where: str
        ) -> tuple[list[str], list[Mapping]]:
            return reader.read(context, data, where)

        yield read_here
        return
    pool = Processes([read_in_worker.__module__])

    async def read_there(context: str, data: bytes, where: str) -> tuple[list[str], list[Mapping]]:
        return from_worker(await pool.run(read_in_worker, context, data, where))

    try:
        yield read_there
    finally:
        pool.close()


@dataclass
class PickleFetcher:
    """Context pickles for the walk, and the trees an earlier run read from them."""

    source: Paced
    settings: Settings
    server_config: ServerConfig
    index: MappingIndex
    _mappings: dict[str, Mapping] = field(default_factory=dict)  # contexts share most

    def known(self, context: str) -> tuple[list[Mapping], FileMeta] | None:
        """The tree of `context` as an earlier run read it from its pickle, while
        server_config gives the context (and each of its mappings) the SHA-1 it had
        then, and the cached pickle has the size it had."""
        metadata = self.server_config.metadata
        meta = metadata.get(context)
        found = self.index.tree(context, meta.sha1) if meta else None
        if found is None:
            return None
        names, pickle = found
        settings = self.settings
        where = relative_path(Kind.pickle, f"{context}.pkl", settings.observatory, settings.layout)
        try:
            if os.stat(os.path.join(settings.cache, where)).st_size != pickle.size:
                return None
        except OSError:
            return None
        mappings = []
        for name in names:
            mapping = self._mappings.get(name)
            if mapping is None:
                mapping_meta = metadata.get(name)
                mapping = self.index.get(name, mapping_meta.sha1) if mapping_meta else None
                if mapping is None:
                    return None
                self._mappings[name] = mapping
            mappings.append(mapping)
        return mappings, pickle

    async def __call__(self, context: str) -> bytes:
        try:
            return await self.source.read(
                self.settings.pickles, f"{context}.pkl", LIMITS[Kind.pickle]
            )
        except NotFound:
            where = f"{self.settings.pickles}/{context}.pkl"
            listed = await _listed(self.source, self.settings.pickles)
            pickled = [name.removesuffix(".pkl") for name in listed]
            raise SyncError(f"{where}: no such context pickle{nearest(context, pickled)}") from None


@dataclass
class MappingFetcher:
    """Mappings for the walk: known from an earlier run's parse, or read from the
    cache when already there and valid, else fetched from S3. A cached copy that
    fails its check is named in `bad`, for the run to replace or remove."""

    source: Paced
    settings: Settings
    server_config: ServerConfig
    contexts: list[str]
    index: MappingIndex
    bad: set[str] = field(default_factory=set)

    def known(self, name: str) -> Mapping | None:
        """The earlier parse of `name`, if server_config still names the SHA-1 it was
        parsed from and the cached file has its size."""
        meta = self.server_config.metadata.get(name)
        if meta is None:
            return None
        try:
            if os.stat(self._local(name)).st_size != meta.size:
                return None
        except OSError:
            return None
        return self.index.get(name, meta.sha1)

    def _local(self, name: str) -> str:
        """A string, not a Path: a re-run stats every mapping of every context."""
        return os.path.join(self._directory, name)

    @functools.cached_property
    def _directory(self) -> str:
        where = relative_path(Kind.mapping, "", self.settings.observatory, self.settings.layout)
        return os.path.join(self.settings.cache, where)

    async def __call__(self, name: str) -> bytes:
        meta = self.server_config.metadata.get(name)
        if meta is not None:
            local = Path(self._local(name))
            try:
                data = local.read_bytes() if local.stat().st_size == meta.size else None
            except OSError:
                data = None
            if data is not None:
                if hashlib.sha1(data).hexdigest() == meta.sha1:
                    return data
                self.bad.add(name)
        try:
            data = await self.source.read(self.settings.mappings, name, LIMITS[Kind.mapping])
        except NotFound:
            what, near = "mapping", ""
            if name in self.contexts:
                listed = await _listed(self.source, self.settings.mappings)
                what, near = "context", nearest(name, [*listed, *self.server_config.mappings])
            raise SyncError(f"{self.settings.mappings}/{name}: no such {what}{near}") from None
        if meta is not None and (len(data), hashlib.sha1(data).hexdigest()) != (
            meta.size,
            meta.sha1,
        ):
            raise FormatError(
                f"{self.settings.mappings}/{name}: does not match its size and SHA-1 "
                "in server_config"
            )
        return data
