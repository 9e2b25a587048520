"""The plan of a run: server_config, which contexts, their walk, every file they need;
or, for the same command under the same server_config, the plan the last run made
(`cache.last_plan`). What a planning run learned is kept for the next (`remember`).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..cache import last_plan
from ..cache.last_plan import Plan
from ..cache.mapping_index import MappingIndex
from ..cache.verified import VerifiedIndex
from ..engine.ledger import Ledger
from ..engine.paced import Paced
from ..rules.layout import Kind, relative_path
from ..rules.plans import FileSpec, build_plan, file_spec
from ..rules.server_config import FileMeta, ServerConfig
from ..rules.walker import (
    KeepPickle,
    Selection,
    Walk,
    collect_references,
    walk,
    walk_pickles,
)
from .reads import (
    MappingFetcher,
    PickleFetcher,
    choose_contexts,
    decode_server_config,
    read_server_config,
    tree_reader,
)
from .settings import Settings
from .upkeep import counted

# Bytes planning read that the cache needs, with the plan's entry for them
Keep = Callable[[FileSpec, bytes], Awaitable[None]]


@dataclass
class Planning:
    plan: Plan
    config_bytes: bytes
    request: str  # what the plan follows from (`last_plan.request_key`)
    # What the walk found, for the next run to trust; None when the plan was remembered
    walked: Walk | None = None
    server_config: ServerConfig | None = None
    index: MappingIndex | None = None

    def remember(self, settings: Settings) -> None:
        """What this run planned and parsed, for the next to trust."""
        if self.walked is None:
            return  # remembered already
        assert self.server_config is not None and self.index is not None
        remember_walk(self.index, self.walked, self.server_config)
        last_plan.save(settings.cache, settings, self.request, self.plan)  # beside the index


async def make_plan(
    paced: Paced,
    settings: Settings,
    selection: Selection,
    verify: bool,
    jobs: int,
    ledger: Ledger,
    verified: VerifiedIndex,
    keep: Keep | None = None,
    config_bytes: bytes | None = None,
) -> Planning:
    """Every file the selected contexts need; with `verify`, planned from bytes read
    and checked now, never from what an earlier run remembered. Each context pickle
    read goes to `keep`, when given, as it is read. server_config is read from the
    bucket unless given (a server's, from its answer)."""
    if config_bytes is None:
        ledger.note(f"reading {settings.config_where}")
        config_bytes = await read_server_config(paced, settings)
    request = last_plan.request_key(config_bytes, (selection, settings.use_pickles), settings)
    plan = None if verify else last_plan.load(settings.cache, settings, request)
    if plan is not None:
        ledger.note("server_config as the last run of this command found it: its plan holds")
        return Planning(plan, config_bytes, request)
    server_config = decode_server_config(config_bytes, settings)
    contexts, pickles = await choose_contexts(paced, settings, selection, server_config)
    what = "context pickles" if pickles else "mappings"
    ledger.note(f"reading the {what} of {counted(contexts, 'context')}")
    index = MappingIndex.load(settings.cache, settings.observatory)
    if pickles:
        fetch_pickle = PickleFetcher(paced, settings, server_config, index)
        async with tree_reader(len(contexts)) as read:
            walked = await walk_pickles(
                contexts,
                fetch_pickle,
                read,
                settings.pickles,
                ledger.note,
                None if verify else fetch_pickle.known,
                _pickle_keeper(keep, settings),
            )
        collect_references(walked)
    else:
        fetcher = MappingFetcher(paced, settings, server_config, contexts, index)
        walked = await walk(contexts, fetcher, jobs, None if verify else fetcher.known)
        for name in fetcher.bad:  # found corrupt: re-hashed (and replaced) after
            verified.doubt(relative_path(Kind.mapping, name, settings.observatory, settings.layout))
    needed = build_plan(walked, server_config, config_bytes, settings)
    plan = Plan(contexts, pickles, needed, server_config.bad_files)
    return Planning(plan, config_bytes, request, walked, server_config, index)


def _pickle_keeper(keep: Keep | None, settings: Settings) -> KeepPickle | None:
    if keep is None:
        return None

    async def keep_pickle(context: str, data: bytes, meta: FileMeta) -> None:
        await keep(file_spec(settings, Kind.pickle, f"{context}.pkl", None, meta), data)

    return keep_pickle


def remember_walk(index: MappingIndex, walked: Walk, server_config: ServerConfig) -> None:
    """What this run parsed, for the next to trust (`mapping_index`): mappings whose
    bytes the walk checked against server_config, and the trees of the contexts read
    from pickles whose every mapping server_config gives a SHA-1."""
    metadata = server_config.metadata
    for name in walked.mapping_bytes:
        if meta := metadata.get(name):
            index.remember(walked.mappings[name], meta.sha1)
    in_trees: dict[str, str] = {}  # each mapping once: most are in many contexts' trees
    for context in walked.parsed:
        names = walked.trees[context]
        shas = {name: meta.sha1 for name in names if (meta := metadata.get(name))}
        context_meta = metadata.get(context)
        if context_meta is None or len(shas) < len(names):
            continue  # not all of it can be checked against server_config next time
        in_trees.update(shas)
        pickle = walked.pickles[f"{context}.pkl"]
        index.remember_tree(context, context_meta.sha1, names, pickle)
    for name, sha1 in in_trees.items():
        index.remember(walked.mappings[name], sha1)
    index.save()
