"""The cache around a run: made ready before a transfer (debris of runs that are
gone swept, files changed since they were verified found, what cannot fit
refused), what was verified recorded after, and what the selection no longer
needs purged or moved into another layout.
"""

import contextlib
import os
import shutil
from collections.abc import Sized
from pathlib import Path
from typing import Any

import anyio
from rich.filesize import decimal

from ..cache.audit import Problem, check, remove, unneeded
from ..cache.crds_config import check_cache_layout, write_cache_layout
from ..cache.locks import Locks
from ..cache.organize import organize
from ..cache.verified import VerifiedIndex
from ..cache.workfiles import RunFile, sweep
from ..engine.ledger import Ledger, Planned, Report
from ..engine.transfer import Transfer
from ..errors import SyncError
from ..pool import for_each
from ..rules.layout import Kind
from ..rules.plans import FileSpec
from .settings import Settings


class OpenCache:
    """The cache made ready (`prepare_cache`) and this run's `RunFile` held, from
    the first file the run writes to its end: a run that writes nothing (it only
    plans, or fails before it fetches) leaves no cache behind."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._run_file: RunFile | None = None

    def open(self) -> None:
        if self._run_file is None:
            prepare_cache(self.settings)
            self.hold()

    def hold(self) -> None:
        """The run file alone, for a run that only removes files."""
        if self._run_file is None:
            self._run_file = RunFile(self.settings.cache).__enter__()

    def __enter__(self) -> "OpenCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._run_file is not None:
            self._run_file.__exit__(*exc)


async def fetch_files(
    transfer: Transfer,
    fetch: list[FileSpec],
    in_hand: dict[str, bytes],
    opened: OpenCache,
    verified: VerifiedIndex,
) -> Report:
    """The transfer, with the cache made ready before (bytes in hand written, debris
    of runs that are gone swept, changed files found) and what was verified
    recorded after."""
    opened.open()
    cache, ledger = opened.settings.cache, transfer.ledger

    async def put(spec: FileSpec) -> None:
        await transfer.put(spec, in_hand[spec.name])

    await for_each([spec for spec in fetch if spec.name in in_hand], put, transfer.options.jobs)
    directories = {cache / d for d in {spec.path.rpartition("/")[0] for spec in fetch}}
    await anyio.to_thread.run_sync(sweep, cache, directories)
    missing = await _check_room(fetch, cache, ledger, verified)
    transfer.missing = frozenset(spec.name for spec in missing)
    ledger.record(Planned(len(fetch), sum(spec.size or 0 for spec in fetch)))
    report = await transfer.run(fetch)
    # What was fetched, or re-hashed with --verify, is verified as it is now.
    checked = fetch if transfer.options.verify else missing
    await anyio.to_thread.run_sync(_remember, checked, report, cache, verified)
    await verified.save(transfer.locks)
    return report


async def purge(
    needed: list[FileSpec],
    kinds: tuple[Kind, ...],
    dry_run: bool,
    opened: OpenCache,
    verified: VerifiedIndex,
) -> list[Path]:
    """Remove (with `dry_run`, only list) and return the files of `kinds` that `needed`
    does not name; and the debris of runs that are gone (`workfiles`)."""
    cache, obs = opened.settings.cache, opened.settings.observatory
    purged = await anyio.to_thread.run_sync(unneeded, needed, cache, obs, kinds)
    if dry_run:
        return purged
    opened.hold()
    roots = [cache / kind.directory / obs for kind in kinds]
    await anyio.to_thread.run_sync(sweep, cache, [d for r in roots for d, _, _ in os.walk(r)])
    await anyio.to_thread.run_sync(remove, purged)
    for path in purged:
        verified.forget(path.relative_to(cache).as_posix())
    doubted = [spec for spec in needed if spec.path in verified.doubted]
    if doubted:  # mappings that failed their check during the walk
        found = await anyio.to_thread.run_sync(check, doubted, cache, False, verified)
        await anyio.to_thread.run_sync(remove, corrupt_paths(found, cache))
    await verified.save(Locks(lambda message: None))
    return purged


async def organize_references(
    needed: list[FileSpec], settings: Settings, dry_run: bool, ledger: Ledger
) -> None:
    """The cache's references into `settings.layout`, its tag written last."""
    instruments = {spec.name: spec.instrument for spec in needed if spec.instrument}
    cache, obs, layout = settings.cache, settings.observatory, settings.layout
    moves = await anyio.to_thread.run_sync(organize, cache, obs, layout, instruments, dry_run)
    left = f"; {len(moves.unknown):,} of no known instrument left in place" if moves.unknown else ""
    verb = "would move" if dry_run else "moved"
    ledger.note(f"organize: {verb} {moves.moved:,} references into the {layout} layout{left}")
    if not dry_run:
        write_cache_layout(cache, obs, layout)


async def _check_room(
    fetch: list[FileSpec], cache: Path, ledger: Ledger, verified: VerifiedIndex
) -> list[FileSpec]:
    """Say what is still to fetch, and stop before writing anything if the cache's
    file system cannot hold it (what a failed file would reveal hours later).
    Returns the files missing or wrong (by size, or by SHA-1 where `verified` saw
    them change). The wrong ones are removed first: were their fetch to fail, no
    wrong file would be left where crds looks."""
    problems = await anyio.to_thread.run_sync(check, fetch, cache, False, verified)
    await anyio.to_thread.run_sync(remove, corrupt_paths(problems, cache))
    missing = [problem.spec for problem in problems]
    needed = sum(spec.size or 0 for spec in missing)
    ledger.note(
        f"{counted(missing, 'file')} to fetch ({decimal(needed)}), "
        f"{len(fetch) - len(missing):,} already valid"
    )
    free = shutil.disk_usage(cache).free
    if needed > free:
        raise SyncError(
            f"{cache}: {decimal(needed)} to fetch but {decimal(free)} free; free space or "
            "sync fewer contexts (nothing was written)"
        )
    return missing


def corrupt_paths(problems: list[Problem], cache: Path) -> list[Path]:
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


def check_writable(settings: Settings, organize: bool) -> None:
    """Before any request, for a run that writes: a cache of another layout (unless it
    is to be organized into this one), or that could not be made or written (a file,
    a read-only or foreign directory), is a mistake to say now, not after planning.
    A cache still to be made is tried (its first missing directory made and
    removed): a run that fails later leaves none behind."""
    cache = settings.cache
    if not organize:
        check_cache_layout(cache, settings.observatory, settings.layout)
    missing = None  # the first directory of the cache's path still to be made
    for place in (cache, *cache.parents):
        if os.path.lexists(place):
            break
        missing = place
    if missing is None:
        if not cache.is_dir():
            raise SyncError(f"{cache}: cannot use the cache: not a directory")
        if not os.access(cache, os.W_OK | os.X_OK):
            raise SyncError(f"{cache}: the cache is not writable")
        return
    try:
        missing.mkdir()
    except FileExistsError:
        return  # another process sharing the cache made it just now
    except OSError as exc:
        raise SyncError(f"{cache}: cannot create the cache: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # in use already by another process: leave it
        missing.rmdir()


def prepare_cache(settings: Settings) -> None:
    """Fail before any transfer if the cache cannot be used at all."""
    check_cache_layout(settings.cache, settings.observatory, settings.layout)
    try:
        settings.cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SyncError(f"{settings.cache}: cannot create the cache: {exc.strerror}") from None
    if not os.access(settings.cache, os.W_OK | os.X_OK):
        raise SyncError(f"{settings.cache}: the cache is not writable")


def counted(items: Sized, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"
