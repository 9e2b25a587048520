"""From chosen contexts to every file they need.

The walk goes level by level (pmaps, then imaps, then rmaps) so that all the
mappings of one level are fetched concurrently; HST buckets have no mapping
files, and each context's pickle gives its whole tree at once (`pickles`).
The result must equal what the crds library's `mapping_names()` and
`reference_names()` give for the same contexts; tests check that on real
contexts.
"""

import difflib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..errors import SyncError
from ..network.location import Location
from ..pool import for_each
from .mapping import Mapping, is_mapping_name, parse_mapping
from .names import check_name, is_plain_name
from .server_config import FileMeta, ServerConfig

FetchMapping = Callable[[str], Awaitable[bytes]]  # a mapping's (or context pickle's) bytes
KnownMapping = Callable[[str], Mapping | None]  # a mapping already parsed on an earlier run
# A context's tree as read from its pickle on an earlier run, and that pickle's size and SHA-1
KnownTree = Callable[[str], tuple[list[Mapping], FileMeta] | None]
# A context pickle read (context, bytes, where): its mappings' names, and the mappings
# new to the reader (`pickles.TreeReader`)
ReadTree = Callable[[str, bytes, str], Awaitable[tuple[list[str], list[Mapping]]]]
# A context pickle read and found good, with its bytes and their size and SHA-1: for
# the cache, which would otherwise fetch it a second time
KeepPickle = Callable[[str, bytes, FileMeta], Awaitable[None]]
Say = Callable[[str], None]  # progress, for a person
# Context pickles fetched at once: each waits, a few MB in memory, until it is read (on
# the event loop, or by one of a worker per core), so more would only wait longer (514
# of them held 2 GB).
PICKLES_AT_ONCE = 8
PROGRESS_EVERY = 2.0  # seconds between progress notes while pickles are read


@dataclass(frozen=True)
class Selection:
    """Which contexts to sync: all, the newest N, named ones, or the default."""

    all: bool = False
    last: int | None = None
    names: tuple[str, ...] = ()


@dataclass
class Walk:
    contexts: list[str]
    mappings: dict[str, Mapping] = field(default_factory=dict)
    mapping_bytes: dict[str, bytes] = field(default_factory=dict)
    references: dict[str, str | None] = field(default_factory=dict)  # name -> instrument
    # HST: "<context>.pkl" -> the size and SHA-1 of the bytes parsed; a pickle the
    # walk did not hand to `keep` is fetched again and must match
    pickles: dict[str, FileMeta] = field(default_factory=dict)
    trees: dict[str, list[str]] = field(default_factory=dict)  # HST: context -> its mappings
    parsed: set[str] = field(default_factory=set)  # HST: contexts whose pickle was read


def select_contexts(
    selection: Selection, server_config: ServerConfig, bucket_names: list[str] | None
) -> list[str]:
    """Resolve a selection; `bucket_names` lists the bucket's mappings (for --all / --last)."""
    if selection.names:
        names = [_symbolic(name, server_config) for name in selection.names]
        return [_check_context(name, server_config) for name in dict.fromkeys(names)]
    if not (selection.all or selection.last):
        return [_check_context(server_config.operational_context, server_config)]
    contexts = sorted(
        (name for name in bucket_names or [] if name.endswith(".pmap") and is_plain_name(name)),
        key=context_serial,
    )
    if not contexts:
        raise SyncError("the source lists no contexts (.pmap files) among its mappings")
    return contexts if selection.all else contexts[-selection.last :]


def context_serial(name: str) -> tuple[int, str]:
    """Order contexts by serial number (jwst_0541.pmap -> 541); unnumbered ones first."""
    match = re.search(r"_(\d+)\.pmap$", name)
    return (int(match.group(1)) if match else -1, name)


async def walk(
    contexts: list[str], fetch: FetchMapping, jobs: int, known: KnownMapping | None = None
) -> Walk:
    """Walk down from `contexts`; mappings `known` need neither fetching nor parsing
    (and are then absent from `mapping_bytes`)."""
    result = Walk(contexts)
    level = sorted(set(contexts))
    while level:
        children: set[str] = set()

        async def load(name: str, children: set[str] = children) -> None:
            mapping = known(name) if known else None
            if mapping is None:
                data = await fetch(name)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise SyncError(f"{name}: mapping is not UTF-8 text") from None
                mapping = parse_mapping(name, text)
                result.mapping_bytes[name] = data
            result.mappings[name] = mapping
            children.update(mapping.mappings)

        await for_each(level, load, jobs)
        level = sorted(children - result.mappings.keys())
    collect_references(result)
    return result


async def walk_pickles(
    contexts: list[str],
    fetch: FetchMapping,
    read: ReadTree,
    location: Location,
    say: Say,
    known: KnownTree | None = None,
    keep: KeepPickle | None = None,
) -> Walk:
    """The same walk from context pickles (HST), each of which holds its whole tree;
    contexts `known` need neither fetching nor reading. Each pickle's bytes are let go
    once read (and handed to `keep`); `say` hears how far it is. The references are
    left for `collect_references`, called once the readers are gone: merging 1.3
    million names while they still held their memory made the run's peak."""
    result = Walk(contexts)
    todo = sorted(set(contexts))
    found: set[str] = set()
    last = time.monotonic()

    def take(mappings: list[Mapping]) -> None:
        for mapping in mappings:
            if mapping.name not in result.mappings:
                result.mappings[mapping.name] = mapping
                found.update(mapping.references)

    async def load(context: str) -> None:
        nonlocal last
        tree = known(context) if known else None
        if tree is None:
            data = await fetch(context)
            meta = FileMeta.of(data)
            names, new = await read(context, data, f"{location}/{context}.pkl")
            if keep is not None:
                await keep(context, data, meta)
            del data
            take(new)
            result.parsed.add(context)
        else:
            mappings, meta = tree
            names = [mapping.name for mapping in mappings]
            take(mappings)
        result.trees[context], result.pickles[f"{context}.pkl"] = names, meta
        if time.monotonic() - last >= PROGRESS_EVERY and len(result.trees) < len(todo):
            last = time.monotonic()
            say(
                f"read {len(result.trees):,} of {len(todo):,} context pickles: "
                f"{len(found):,} references so far"
            )

    await for_each(todo, load, PICKLES_AT_ONCE)
    return result


def collect_references(result: Walk) -> None:
    """Each reference with the instrument of the first rmap naming it, in name order
    (the same on every run). Merged a mapping at a time, last first, so the first
    overwrites: every HST context's rmaps name 1.3 million references between them."""
    for name in sorted(result.mappings, reverse=True):
        mapping = result.mappings[name]
        result.references.update(dict.fromkeys(mapping.references, mapping.instrument))


def _symbolic(name: str, server_config: ServerConfig) -> str:
    """crds's symbolic names, e.g. `jwst-operational`, as server_config resolves them."""
    observatory, _, role = name.partition("-")
    if observatory == server_config.observatory and role in ("operational", "edit"):
        value = server_config.raw.get(f"{role}_context")
        if not isinstance(value, str):
            raise SyncError(f"context {name!r}: server_config has no {role}_context")
        return value
    return name


def _check_context(name: str, server_config: ServerConfig) -> str:
    check_name(name, "context")
    if not is_mapping_name(name):
        near = nearest(name, server_config.mappings)
        raise SyncError(f"context {name!r}: expected a .pmap, .imap or .rmap name{near}")
    return name


def nearest(name: str, known: Iterable[str]) -> str:
    """For a name that is no context: '; nearest known: ...', the mapping names of
    `known` spelled most like it (of its kind, if it has one), or ''."""
    kind = next((ext for ext in (".pmap", ".imap", ".rmap") if name.endswith(ext)), ".pmap")
    names = sorted({other for other in known if other.endswith(kind) and other != name})
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; nearest known: {', '.join(close)}" if close else ""
