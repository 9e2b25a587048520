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
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import anyio
from rich.filesize import decimal

from .audit import PURGEABLE, Problem, check, remove, unneeded
from .errors import SyncError
from .layout import (
    Kind,
    check_cache_layout,
    crds_environment,
    relative_path,
    write_cache_config,
    write_cache_layout,
)
from .locks import Locks
from .mapping_index import MappingIndex
from .organize import organize
from .plans import SERVER_CONFIG, FileSpec, build_plan, cache_key, shard
from .progress import Progress
from .reads import MappingFetcher, PickleFetcher, choose_contexts, load_server_config
from .settings import Settings
from .source import S3Source
from .transfer import Report, Transfer, TransferOptions
from .verified import VerifiedIndex
from .walker import Selection, walk, walk_pickles
from .workfiles import RunFile, sweep

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
        verified = VerifiedIndex.load(settings.cache, settings.observatory)
        if pickles:
            fetch_pickle = PickleFetcher(source, settings)
            walked = await walk_pickles(contexts, fetch_pickle, jobs, settings.pickles)
        else:
            index = MappingIndex.load(settings.cache, settings.observatory)
            fetcher = MappingFetcher(source, settings, server_config, contexts, index)
            known = None if options.transfer.verify else fetcher.known
            walked = await walk(contexts, fetcher, jobs, known)
            for name in fetcher.bad:  # found corrupt: re-hashed (and replaced) below
                verified.doubt(
                    relative_path(Kind.mapping, name, settings.observatory, settings.layout)
                )
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
        fetch = await _act(options, settings, result, needed, verified)
        if fetch is not None:
            prefetched = {SERVER_CONFIG: config_bytes, **walked.mapping_bytes, **walked.pickles}
            transfer = Transfer(
                source, settings.cache, progress, options.transfer, prefetched, helpers=helpers
            )
            result.report = await _fetch(transfer, fetch, settings, verified)
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
                await _purge(needed, settings, options.purge, False, result, verified)
    result.seconds = time.monotonic() - start
    return result


async def _fetch(
    transfer: Transfer, fetch: list[FileSpec], settings: Settings, verified: VerifiedIndex
) -> Report:
    """The transfer, with the cache made ready before (debris of runs that are gone
    swept, changed files found) and what was verified recorded after."""
    _prepare_cache(settings)
    cache, progress = settings.cache, transfer.progress
    transfer.locks = Locks(progress.note)
    with RunFile(cache):
        await anyio.to_thread.run_sync(sweep, cache, {cache / s.path.parent for s in fetch})
        missing = await _check_room(fetch, cache, progress, verified)
        transfer.missing = frozenset(spec.name for spec in missing)
        progress.planned(len(fetch), sum(spec.size or 0 for spec in fetch))
        with progress:
            report = await transfer.run(fetch)
        # What was fetched, or re-hashed with --verify, is verified as it is now.
        checked = fetch if transfer.options.verify else missing
        await anyio.to_thread.run_sync(_remember, checked, report, cache, verified)
        try:
            await verified.save(transfer.locks)
        except OSError as exc:
            raise SyncError(f"{exc.filename}: cannot write: {exc.strerror}") from None
    return report


async def _act(
    options: SyncOptions,
    settings: Settings,
    result: SyncResult,
    needed: list[FileSpec],
    verified: VerifiedIndex,
) -> list[FileSpec] | None:
    """Everything but fetching; returns what to fetch, or None. `needed` is every file
    the contexts need, whatever part of it the plan is (rules only, a shard)."""
    cache = settings.cache
    if options.action in (Action.check, Action.repair):
        await _find_problems(options, settings, result, verified)
        if options.action is Action.check or options.dry_run:
            return None
        # known bad: no reason to keep them
        await anyio.to_thread.run_sync(remove, _corrupt(result.problems, cache))
        return [problem.spec for problem in result.problems]
    if options.action is Action.purge:
        kinds = options.purge or PURGEABLE
        await _purge(needed, settings, kinds, options.dry_run, result, verified)
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


async def _purge(
    needed: list[FileSpec],
    settings: Settings,
    kinds: tuple[Kind, ...],
    dry_run: bool,
    result: SyncResult,
    verified: VerifiedIndex,
) -> None:
    """Remove (with `dry_run`, only list) the files of `kinds` that `needed` does not name,
    and the debris of runs that are gone (`workfiles`)."""
    cache, obs = settings.cache, settings.observatory
    result.purged = await anyio.to_thread.run_sync(unneeded, needed, cache, obs, kinds)
    if dry_run:
        return
    with RunFile(cache):
        roots = [cache / kind.directory / obs for kind in kinds]
        await anyio.to_thread.run_sync(sweep, cache, [d for r in roots for d, _, _ in os.walk(r)])
        await anyio.to_thread.run_sync(remove, result.purged)
        for path in result.purged:
            verified.forget(PurePosixPath(path.relative_to(cache)))
        doubted = [spec for spec in needed if spec.path in verified.doubted]
        if doubted:  # mappings that failed their check during the walk
            found = await anyio.to_thread.run_sync(check, doubted, cache, False, verified)
            await anyio.to_thread.run_sync(remove, _corrupt(found, cache))
        try:
            await verified.save(Locks(lambda message: None))
        except OSError as exc:
            raise SyncError(f"{exc.filename}: cannot write: {exc.strerror}") from None


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


async def _check_room(
    fetch: list[FileSpec], cache: Path, progress: Progress, verified: VerifiedIndex
) -> list[FileSpec]:
    """Say what is still to fetch, and stop before writing anything if the cache's
    file system cannot hold it (what a failed file would reveal hours later).
    Returns the files missing or wrong (by size, or by SHA-1 where `verified` saw
    them change). The wrong ones are removed first: were their fetch to fail, no
    wrong file would be left where crds looks."""
    problems = await anyio.to_thread.run_sync(check, fetch, cache, False, verified)
    await anyio.to_thread.run_sync(remove, _corrupt(problems, cache))
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


def _corrupt(problems: list[Problem], cache: Path) -> list[Path]:
    return [cache / problem.spec.path for problem in problems if problem.kind == "corrupt"]


def _remember(
    checked: list[FileSpec], report: Report, cache: Path, verified: VerifiedIndex
) -> None:
    """Record how the files `checked` in this run (fetched, or re-hashed) look now;
    one that failed is forgotten, whatever is left at its path."""
    failed = {failure["name"] for failure in report.failed}
    for spec in checked:
        if spec.name in failed:
            verified.forget(spec.path)
            continue
        try:
            found = os.stat(cache / spec.path)
        except OSError:
            continue
        if spec.size is None or found.st_size == spec.size:
            verified.saw(spec, found)


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
