"""One sync, stage by stage: server_config, selection, walk, plan, transfer, cache config.

This is the only module that knows the order of the stages; each stage lives in
its own module and can be tested alone.
"""

import os
import shutil
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from rich.filesize import decimal

from .audit import PURGEABLE, Problem, check, remove, unneeded
from .errors import SyncError
from .layout import (
    Kind,
    check_cache_layout,
    crds_environment,
    write_cache_config,
    write_cache_layout,
)
from .mapping_index import MappingIndex
from .organize import organize
from .plans import SERVER_CONFIG, FileSpec, build_plan, cache_key, shard
from .progress import Progress
from .reads import MappingFetcher, PickleFetcher, choose_contexts, load_server_config
from .settings import Settings
from .source import S3Source
from .transfer import Report, Transfer, TransferOptions
from .walker import Selection, walk, walk_pickles

if TYPE_CHECKING:
    from .cores import Helpers


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

    @property
    def fetches(self) -> bool:
        """Whether the run may fetch references (and so may use helper processes)."""
        return self.action in (Action.sync, Action.repair) and not self.dry_run


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


async def run_stages(
    settings: Settings, options: SyncOptions, progress: Progress, helpers: "Helpers | None" = None
) -> SyncResult:
    start = time.monotonic()
    jobs = options.transfer.jobs
    async with S3Source(
        settings, jobs, progress, options.transfer.retry_time, options.transfer.timeout
    ) as source:
        progress.note(f"reading {settings.config.url(SERVER_CONFIG)}")
        config_bytes, server_config = await load_server_config(source, settings)
        contexts, pickles = await choose_contexts(
            source, settings, options.selection, server_config
        )
        what = "context pickles" if pickles else "mappings"
        progress.note(f"reading the {what} of {_counted(contexts, 'context')}")
        if pickles:
            fetch_pickle = PickleFetcher(source, settings)
            walked = await walk_pickles(contexts, fetch_pickle, jobs, settings.pickles)
        else:
            index = MappingIndex.load(settings.cache, settings.observatory)
            fetcher = MappingFetcher(source, settings, server_config, contexts, index)
            known = None if options.transfer.verify else fetcher.known
            walked = await walk(contexts, fetcher, jobs, known)
        needed = build_plan(walked, server_config, config_bytes, settings)
        plan = needed
        if options.mappings_only:
            plan = [spec for spec in needed if spec.kind is not Kind.reference]
        if options.shard:
            plan = shard(plan, *options.shard)
        progress.note(
            f"planned {_counted(plan, 'file')} from {_counted(walked.mappings, 'mapping')}"
            if not pickles
            else f"planned {_counted(plan, 'file')}"
        )
        result = SyncResult(
            contexts,
            plan,
            key=cache_key(plan, settings.observatory, settings.layout),
            environment=crds_environment(settings.cache, settings.observatory, settings.layout),
        )
        if options.organize:
            await _organize(needed, settings, options.dry_run, progress)
        fetch = await _act(options, settings, result, needed)
        if fetch is not None:
            _prepare_cache(settings)
            missing = await _check_room(fetch, settings.cache, progress)
            transfer = Transfer(
                source,
                settings.cache,
                progress,
                options.transfer,
                prefetched={SERVER_CONFIG: config_bytes, **walked.mapping_bytes, **walked.pickles},
                helpers=helpers,
                missing=frozenset(spec.name for spec in missing),
            )
            progress.planned(len(fetch), sum(spec.size or 0 for spec in fetch))
            with progress:
                result.report = await transfer.run(fetch)
            try:
                write_cache_config(
                    settings.cache, settings.observatory, settings.layout, server_config.bad_files
                )
                if not pickles:  # the walk checked these bytes against server_config
                    for name in walked.mapping_bytes:
                        if meta := server_config.metadata.get(name):
                            index.remember(walked.mappings[name], meta.sha1)
                    index.save()
            except OSError as exc:
                raise SyncError(
                    f"{exc.filename}: cannot write cache config: {exc.strerror}"
                ) from None
            if options.purge:  # the files of this plan are in place: the rest may go
                await _purge(needed, settings, options.purge, options.dry_run, result)
    result.seconds = time.monotonic() - start
    return result


async def _act(
    options: SyncOptions, settings: Settings, result: SyncResult, needed: list[FileSpec]
) -> list[FileSpec] | None:
    """Everything but fetching; returns what to fetch, or None. `needed` is every file
    the contexts need, whatever part of it the plan is (rules only, a shard)."""
    cache = settings.cache
    if options.action in (Action.check, Action.repair):
        await _find_problems(options, settings, result)
        if options.action is Action.check or options.dry_run:
            return None
        corrupt = [cache / p.spec.path for p in result.problems if p.kind == "corrupt"]
        await anyio.to_thread.run_sync(remove, corrupt)  # known bad: no reason to keep them
        return [problem.spec for problem in result.problems]
    if options.action is Action.purge:
        await _purge(needed, settings, options.purge or PURGEABLE, options.dry_run, result)
        return None
    if options.action is Action.key:
        return None
    if options.dry_run:  # what the run would fetch: the missing and corrupt files
        await _find_problems(options, settings, result)
        return None
    return result.plan


async def _find_problems(options: SyncOptions, settings: Settings, result: SyncResult) -> None:
    """The plan against the cache (a cache of another layout is refused first)."""
    check_cache_layout(settings.cache, settings.observatory, settings.layout)
    result.problems = await anyio.to_thread.run_sync(
        check, result.plan, settings.cache, options.transfer.verify
    )


async def _purge(
    needed: list[FileSpec],
    settings: Settings,
    kinds: tuple[Kind, ...],
    dry_run: bool,
    result: SyncResult,
) -> None:
    """Remove (with `dry_run`, only list) the files of `kinds` that `needed` does not name."""
    obs = settings.observatory
    result.purged = await anyio.to_thread.run_sync(unneeded, needed, settings.cache, obs, kinds)
    if not dry_run:
        await anyio.to_thread.run_sync(remove, result.purged)


async def _organize(
    needed: list[FileSpec], settings: Settings, dry_run: bool, progress: Progress
) -> None:
    """The cache's references into `settings.layout`, its tag written last."""
    instruments = {spec.name: spec.instrument for spec in needed if spec.instrument}
    cache, obs, layout = settings.cache, settings.observatory, settings.layout
    moves = await anyio.to_thread.run_sync(organize, cache, obs, layout, instruments, dry_run)
    left = f"; {len(moves.unknown):,} of no known instrument left in place" if moves.unknown else ""
    verb = "would move" if dry_run else "moved"
    progress.note(f"organize: {verb} {moves.moved:,} references into the {layout} layout{left}")
    if not dry_run:
        write_cache_layout(cache, obs, layout)


async def _check_room(fetch: list[FileSpec], cache: Path, progress: Progress) -> list[FileSpec]:
    """Say what is still to fetch, and stop before writing anything if the cache's
    file system cannot hold it (what a failed file would reveal hours later).
    Returns the files missing or of the wrong size."""
    problems = await anyio.to_thread.run_sync(check, fetch, cache, False)
    missing = [problem.spec for problem in problems]
    needed = sum(spec.size or 0 for spec in missing)
    progress.note(
        f"{_counted(missing, 'file')} to fetch ({decimal(needed)}), "
        f"{len(fetch) - len(missing):,} already valid"
    )
    free = shutil.disk_usage(cache).free
    if needed > free:
        raise SyncError(
            f"{cache}: {decimal(needed)} to fetch but {decimal(free)} free; free space or "
            "sync fewer contexts (nothing was written)"
        )
    return missing


def _counted(items: Sized, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"


def _prepare_cache(settings: Settings) -> None:
    """Fail before any transfer if the cache cannot be used at all."""
    check_cache_layout(settings.cache, settings.observatory, settings.layout)
    try:
        settings.cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SyncError(f"{settings.cache}: cannot create the cache: {exc.strerror}") from None
    if not os.access(settings.cache, os.W_OK | os.X_OK):
        raise SyncError(f"{settings.cache}: the cache is not writable")
