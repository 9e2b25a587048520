"""One sync, stage by stage: server_config, selection, walk, plan, transfer, cache config.

This is the only module that knows the order of the stages; each stage lives in
its own module and can be tested alone.
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import anyio

from ..cache.audit import PURGEABLE, Problem, check, remove
from ..cache.crds_config import check_cache_layout, crds_environment, write_cache_config
from ..cache.verified import VerifiedIndex
from ..engine.ledger import Ledger, Report
from ..engine.paced import Paced
from ..engine.pacer import Pacer
from ..engine.transfer import Transfer, TransferOptions
from ..errors import SyncError
from ..network.server_source import ServerSource
from ..network.source import S3Source
from ..rules.layout import Kind
from ..rules.plans import SERVER_CONFIG, FileSpec, cache_key, in_shard, shard
from ..rules.walker import Selection
from .datasets import BestRefs, Choice
from .planning import make_plan
from .server import ask_server
from .settings import Settings
from .upkeep import (
    OpenCache,
    check_writable,
    corrupt_paths,
    counted,
    fetch_files,
    organize_references,
    purge,
)


class Action(StrEnum):
    """What to do with the plan."""

    sync = "sync"  # fetch what is missing or invalid (by size; by SHA-1 with verify)
    key = "key"  # only the plan's cache key
    check = "check"  # list missing and corrupt files, fetch nothing
    repair = "repair"  # check, then fetch exactly what check found
    purge = "purge"  # remove the observatory's files the plan does not need


@dataclass(frozen=True)
class SyncOptions:
    selection: Selection = field(default_factory=Selection)
    transfer: TransferOptions = field(default_factory=TransferOptions)
    dry_run: bool = False
    mappings_only: bool = False
    action: Action = Action.sync
    shard: tuple[int, int] | None = None  # (K, N): the K-th of N shards, 1 <= K <= N
    purge: tuple[Kind, ...] = ()  # after a sync or repair, remove these kinds' unneeded files
    organize: bool = False  # move the cache's references into the layout asked for first
    datasets: tuple[Path, ...] = ()  # only the references these need (crds's best references)


@dataclass
class SyncResult:
    contexts: list[str]
    plan: list[FileSpec]
    report: Report = field(default_factory=Report)
    seconds: float = 0.0
    key: str = ""
    problems: list[Problem] = field(default_factory=list)  # check, repair
    purged: list[Path] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # for crds to read the cache
    datasets: list[Choice] = field(default_factory=list)  # crds's answer for each, by context


async def run_stages(settings: Settings, options: SyncOptions, ledger: Ledger) -> SyncResult:
    jobs, how = options.transfer.jobs, options.transfer
    async with (
        _source(settings, jobs, how.timeout) as source,
        Pacer(jobs, ledger, how.retry_time, how.timeout) as pacer,
    ):
        config_bytes = None  # read from the bucket while planning
        if isinstance(source, ServerSource):  # what the server serves, in one answer
            answer = await ask_server(source, pacer, settings, options.selection, ledger)
            settings, config_bytes = answer.settings, answer.config_bytes
            options = replace(options, selection=answer.selection)
        if _writes(options):
            check_writable(settings, options.organize)
        async with (
            _best_refs(options, settings, ledger) as bestrefs,  # datasets read before any GET
            Transfer(source, pacer, settings.cache, options.transfer) as transfer,
        ):
            with OpenCache(settings) as opened:
                paced = Paced(source, pacer)
                return await _run(
                    settings, options, ledger, paced, transfer, opened, bestrefs, config_bytes
                )


def _source(settings: Settings, jobs: int, timeout: float) -> S3Source | ServerSource:
    if settings.server:
        return ServerSource(settings.server, jobs, timeout)
    return S3Source(settings.endpoint, jobs, timeout)


@asynccontextmanager
async def _best_refs(
    options: SyncOptions, settings: Settings, ledger: Ledger
) -> AsyncIterator[BestRefs | None]:
    if not options.datasets:
        yield None
        return
    async with BestRefs(options.datasets, settings.observatory, ledger) as bestrefs:
        await bestrefs.read_headers()
        yield bestrefs


async def _run(
    settings: Settings,
    options: SyncOptions,
    ledger: Ledger,
    paced: Paced,
    transfer: Transfer,
    opened: OpenCache,
    bestrefs: BestRefs | None,
    config_bytes: bytes | None,
) -> SyncResult:
    start = time.monotonic()

    async def keep(spec: FileSpec, data: bytes) -> None:
        """A context pickle planning read: written now, not fetched again."""
        if options.shard is None or in_shard(spec, *options.shard):
            opened.open()
            await transfer.put(spec, data)

    verified = VerifiedIndex.load(settings.cache, settings.observatory)
    selection, jobs = options.selection, options.transfer.jobs
    # crds answers for datasets on the rules as read now, every one of them in hand
    verify = options.transfer.verify or bestrefs is not None
    # what planning reads: with datasets, pickles are refused once read (crds reads mappings)
    keeps = options.action is Action.sync and not options.dry_run and bestrefs is None
    planning = await make_plan(
        paced,
        settings,
        selection,
        verify,
        jobs,
        ledger,
        verified,
        keep if keeps else None,
        config_bytes,
    )
    needed = planning.plan.needed  # every file of the contexts
    choices: list[Choice] = []
    in_hand = {SERVER_CONFIG: planning.config_bytes}
    if bestrefs is not None:  # only what the datasets need
        choices, needed, for_crds = await bestrefs.choose(planning, paced)
        in_hand.update(for_crds)
    plan = needed
    if options.mappings_only:
        plan = [spec for spec in needed if spec.kind is not Kind.reference]
    if options.shard:
        plan = shard(plan, *options.shard)
    walked = planning.walked
    ledger.note(
        f"planned {counted(plan, 'file')} from {counted(walked.mappings, 'mapping')}"
        if walked is not None and not walked.pickles
        else f"planned {counted(plan, 'file')}"
    )
    result = SyncResult(
        planning.plan.contexts,
        plan,
        report=ledger.report,
        key=cache_key(plan, settings.observatory, settings.layout),
        environment=crds_environment(settings.cache, settings.observatory, settings.layout),
        datasets=choices,
    )
    if options.organize:
        await organize_references(planning.plan.needed, settings, options.dry_run, ledger)
    fetch = await _act(options, result, needed, opened, verified)
    if fetch is not None:
        if walked is not None:
            in_hand.update(walked.mapping_bytes)
        await fetch_files(transfer, fetch, in_hand, opened, verified)
        try:
            write_cache_config(
                settings.cache, settings.observatory, settings.layout, planning.plan.bad_files
            )
            planning.remember(settings)
        except OSError as exc:
            raise SyncError(f"{exc.filename}: cannot write cache config: {exc.strerror}") from None
        if options.purge:  # the files of this plan are in place: the rest may go
            result.purged = await purge(needed, options.purge, False, opened, verified)
    result.seconds = time.monotonic() - start
    return result


def _writes(options: SyncOptions) -> bool:
    """Whether the run may write into the cache: check, key and dry runs only read it."""
    return not options.dry_run and options.action in (Action.sync, Action.repair, Action.purge)


async def _act(
    options: SyncOptions,
    result: SyncResult,
    needed: list[FileSpec],
    opened: OpenCache,
    verified: VerifiedIndex,
) -> list[FileSpec] | None:
    """Everything but fetching; returns what to fetch, or None. `needed` is every file
    the run needs (the contexts', or their datasets'), whatever part of it the plan is
    (rules only, a shard)."""
    settings = opened.settings
    cache = settings.cache
    if options.action in (Action.check, Action.repair):
        await _find_problems(options, settings, result, verified)
        if options.action is Action.check or options.dry_run:
            return None
        # known bad: no reason to keep them
        await anyio.to_thread.run_sync(remove, corrupt_paths(result.problems, cache))
        return [problem.spec for problem in result.problems]
    if options.action is Action.purge:
        kinds = options.purge or PURGEABLE
        result.purged = await purge(needed, kinds, options.dry_run, opened, verified)
        return None
    if options.action is Action.key:
        return None
    if options.dry_run:  # what the run would fetch: the missing and corrupt files
        await _find_problems(options, settings, result, verified)
        return None
    return result.plan


async def _find_problems(
    options: SyncOptions, settings: Settings, result: SyncResult, verified: VerifiedIndex
) -> None:
    """The plan against the cache (a cache of another layout is refused first)."""
    check_cache_layout(settings.cache, settings.observatory, settings.layout)
    result.problems = await anyio.to_thread.run_sync(
        check, result.plan, settings.cache, options.transfer.verify, verified
    )
