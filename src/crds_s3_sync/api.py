"""The Python API: what the command does, as functions a test suite or a pipeline
can call. The command itself is built on `prepare` and `execute` below.

    import crds_s3_sync

    result = crds_s3_sync.sync(observatory="roman", last=1, cache="/data/crds")
    os.environ.update(result.environment)  # crds and the pipelines read it offline

Each function takes the command's options as keywords (`Options`; the flag
`--multipart-threshold` is `multipart_threshold=`), and has an `async` twin of
the same name in `crds_s3_sync.aio` for code already inside an event loop. A
mistake in the options, the configuration or the source raises `SyncError` (the
command's exit 2); files that could not be fetched raise `FilesFailed`, a
`SyncError` that carries them and the whole result. One process syncs into a
cache one call at a time (its work files are told apart from other runs' by
process); for several at once, use processes.
"""

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack

import anyio

from .engine.cores import Helpers, default_processes
from .engine.ledger import Ledger, Listener
from .engine.platforms import EVENT_LOOP, check_platform, fit_open_files
from .engine.transfer import TransferOptions
from .errors import SyncError
from .pool import task_group
from .rules.layout import Kind, Layout
from .rules.walker import Selection
from .run.settings import Env, Settings, resolve_settings
from .run.stages import Action, SyncOptions, SyncResult, run_stages

E = TypeVar("E", Env, Layout, Kind)


class Options(TypedDict, total=False):
    """The command's options, by their Python names; all optional."""

    # which contexts (at most one of these; default: CRDS_CONTEXT, else the operational one)
    contexts: Sequence[str]
    last: int
    all: bool
    # where from
    observatory: str
    env: str  # ops, test or int
    bucket: str
    prefix: str
    endpoint_url: str
    no_sign_request: bool
    pickles: bool
    # where to
    cache: str | os.PathLike[str]
    layout: str  # flat or instrument
    mappings_only: bool
    shard: tuple[int, int]  # (K, N): the K-th of N shards
    purge: Sequence[str]  # after sync or repair, remove unneeded "mapping"s, "reference"s
    organize: str  # first move the cache's references into this layout (flat or instrument)
    # how
    dry_run: bool
    verify: bool
    jobs: int
    processes: int
    part_size: int
    multipart_threshold: int
    retry_time: float
    timeout: float
    no_fsync: bool  # for throwaway caches: a crash may leave garbage under a final name


STOPPING = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The run was ended by SIGTERM or SIGHUP, as Ctrl-C ends it (KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class FilesFailed(SyncError):
    """Some files could not be fetched (the command's exit 1); the rest were."""

    def __init__(self, result: SyncResult) -> None:
        self.result = result
        self.failed = result.report.failed
        shown = "; ".join(f"{f['name']}: {f['error']}" for f in self.failed[:3])
        more = f"; and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        super().__init__(f"{len(self.failed)} files failed: {shown}{more}")


@dataclass(frozen=True)
class Run:
    """Everything one run needs, resolved from options, environment and presets."""

    settings: Settings
    options: SyncOptions
    processes: int
    notes: tuple[str, ...] = ()  # said to a person before the run, if anyone listens


def prepare(action: Action, options: Options) -> Run:
    """Check and resolve `options`; a mistake raises SyncError, naming the option."""
    unknown = set(options) - set(Options.__annotations__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    check_platform()
    chosen = [name for name in ("contexts", "last", "all") if options.get(name)]
    if len(chosen) > 1:
        raise SyncError(f"give at most one of contexts, last and all (got {', '.join(chosen)})")
    # A path or an s3:// URL names a context by its file name, as crds reads it.
    names = tuple(_file_name(name) for name in options.get("contexts") or ())
    if not chosen and os.environ.get("CRDS_CONTEXT"):
        names = (os.environ["CRDS_CONTEXT"],)
    for name in ("jobs", "processes", "part_size", "multipart_threshold", "last"):
        value = options.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SyncError(f"{name}={value!r}: must be a whole number of at least 1")
    shard = options.get("shard")
    if shard is not None and not (len(shard) == 2 and 1 <= shard[0] <= shard[1]):
        raise SyncError(f"shard={shard!r}: expected (K, N) with 1 <= K <= N")
    jobs, note = fit_open_files(options.get("jobs", TransferOptions.jobs))
    defaults = TransferOptions()
    part_size, threshold = options.get("part_size"), options.get("multipart_threshold")
    layout = _choice(Layout, "layout", options.get("layout"))
    organize = _choice(Layout, "organize", options.get("organize"))
    if organize and layout and organize is not layout:
        raise SyncError(f"organize={organize.value!r} and layout={layout.value!r} disagree")
    settings = resolve_settings(
        observatory=options.get("observatory"),
        env=_choice(Env, "env", options.get("env")),
        bucket=options.get("bucket"),
        prefix=options.get("prefix"),
        endpoint_url=options.get("endpoint_url"),
        no_sign_request=options.get("no_sign_request", False),
        cache=_path(options.get("cache")),
        layout=organize or layout,
        pickles=options.get("pickles", False),
        contexts=names,
    )
    timeout = options.get("timeout", defaults.timeout)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise SyncError(f"timeout={timeout!r}: must be a number of seconds above 0")
    transfer = TransferOptions(
        jobs=jobs,
        part_size=part_size or defaults.part_size,
        threshold=threshold or defaults.threshold,
        verify=options.get("verify", False),
        retry_time=options.get("retry_time", defaults.retry_time),
        timeout=timeout,
        durable=not options.get("no_fsync", False),
        split_named=part_size is not None or threshold is not None,
    )
    purge = tuple(_choice(Kind, "purge", kind) for kind in options.get("purge") or ())
    if Kind.config in purge:
        raise SyncError("purge='config': only mappings, references and pickles are purged")
    sync_options = SyncOptions(
        Selection(all=options.get("all", False), last=options.get("last"), names=names),
        transfer,
        dry_run=options.get("dry_run", False),
        mappings_only=options.get("mappings_only", False),
        action=action,
        shard=shard,
        purge=purge,
        organize=organize is not None,
    )
    processes = options.get("processes") or default_processes()
    return Run(settings, sync_options, processes, (note,) if note else ())


def execute(run: Run, ledger: Ledger | None = None) -> SyncResult:
    """`run` on an event loop of its own, with helper processes when it fetches and
    forking is safe (`cores`). The result comes back outside asyncio's main task: as
    Python 3.11's runner restores Ctrl-C's handler it formats the finished main task,
    result included, and a plan of thousands of files took 0.1 s to format."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        pass  # no event loop here: as it should be
    else:
        raise SyncError("called inside an event loop: await crds_s3_sync.aio's form instead")
    helpers = None
    if run.options.fetches:
        helpers = Helpers.fork(run.processes, run.settings, run.options.transfer)
    results: list[SyncResult] = []
    stopped_by: list[int] = []

    async def main() -> None:
        async with task_group() as group:
            group.start_soon(_stop_on_signal, group.cancel_scope, stopped_by)
            stages = run_stages(run.settings, run.options, ledger or Ledger(), helpers)
            results.append(await stages)
            group.cancel_scope.cancel()

    before = {signum: signal.getsignal(signum) for signum in STOPPING}
    try:
        anyio.run(main, backend_options=EVENT_LOOP)
    finally:
        for signum, handler in before.items():  # asyncio leaves the default behind
            signal.signal(signum, handler)
        if helpers is not None:
            helpers.close()
    if stopped_by:
        raise Stopped(stopped_by[0])
    return results[0]


async def _stop_on_signal(scope: anyio.CancelScope, stopped_by: list[int]) -> None:
    """SIGTERM (a batch system's time limit, `timeout`) and SIGHUP (a closed terminal)
    end the run as Ctrl-C does: transfers cancelled, their temporary and lock files
    removed, what is complete kept."""
    with anyio.open_signal_receiver(*STOPPING) as signals:
        async for signum in signals:
            stopped_by.append(signum)
            scope.cancel()
            return


async def execute_async(run: Run, ledger: Ledger | None = None) -> SyncResult:
    """`run` on the running event loop, in this process alone."""
    return await run_stages(run.settings, run.options, ledger or Ledger())


def ledger_for(on_event: Listener | None) -> Ledger:
    """The run's ledger, handing every event to `on_event` too (see `engine.ledger`)."""
    return Ledger([on_event] if on_event else [])


def fetched(result: SyncResult) -> SyncResult:
    """The result of a run that fetched, or FilesFailed if any file could not be."""
    if result.report.failed:
        raise FilesFailed(result)
    return result


def _choice(kind: type[E], name: str, value: str | None) -> E | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise SyncError(f"{name}={value!r}: expected one of {known}") from None


def _file_name(context: str) -> str:
    """`roman_0007.pmap` from `/some/dir/roman_0007.pmap` or `s3://b/p/roman_0007.pmap`."""
    tail = context.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.endswith((".pmap", ".imap", ".rmap")) else context


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


# -- the functions ---------------------------------------------------------------------


def sync(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Fetch what the selected contexts need into the cache; raises FilesFailed if any
    file could not be fetched (the rest are kept)."""
    return fetched(execute(prepare(Action.sync, options), ledger_for(on_event)))


def plan(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """What a sync would do, fetching nothing but the rules it must read."""
    return execute(prepare(Action.sync, {**options, "dry_run": True}), ledger_for(on_event))


def check(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Missing and corrupt files (`result.problems`; by SHA-1 with verify=True)."""
    return execute(prepare(Action.check, options), ledger_for(on_event))


def repair(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Check, then fetch exactly what the check found."""
    return fetched(execute(prepare(Action.repair, options), ledger_for(on_event)))


def purge(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Remove the observatory's files that the selection does not need (`result.purged`)."""
    return execute(prepare(Action.purge, options), ledger_for(on_event))


def cache_key(*, on_event: Listener | None = None, **options: Unpack[Options]) -> str:
    """A key that changes whenever the selection's files do: for CI caches."""
    return execute(prepare(Action.key, options), ledger_for(on_event)).key
