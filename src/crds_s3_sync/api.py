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

import signal
from typing import Unpack

import anyio

from .engine.ledger import Ledger, Listener
from .engine.platforms import EVENT_LOOP
from .errors import SyncError
from .pool import task_group
from .run.options import Options, Run, prepare
from .run.stages import Action, SyncResult, run_stages

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


def execute(run: Run, ledger: Ledger | None = None) -> SyncResult:
    """`run` on an event loop of its own. The result comes back outside asyncio's main task: as
    Python 3.11's runner restores Ctrl-C's handler it formats the finished main task,
    result included, and a plan of thousands of files took 0.1 s to format."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        pass  # no event loop here: as it should be
    else:
        raise SyncError("called inside an event loop: await crds_s3_sync.aio's form instead")
    results: list[SyncResult] = []
    stopped_by: list[int] = []

    async def main() -> None:
        async with task_group() as group:
            group.start_soon(_stop_on_signal, group.cancel_scope, stopped_by)
            stages = run_stages(run.settings, run.options, ledger or Ledger())
            results.append(await stages)
            group.cancel_scope.cancel()

    before = {signum: signal.getsignal(signum) for signum in STOPPING}
    try:
        anyio.run(main, backend_options=EVENT_LOOP)
    finally:
        for signum, handler in before.items():  # asyncio leaves the default behind
            signal.signal(signum, handler)
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
