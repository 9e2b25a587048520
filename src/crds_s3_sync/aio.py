"""The Python API's `async` forms, for code already inside an event loop (an
async test, a Jupyter notebook): the same functions and options as
`crds_s3_sync.sync` and friends (see `api`), run on the caller's loop in this
process alone. `on_event` receives every event of the run's ledger (`engine.ledger`)."""

from typing import Unpack

from .api import Options, execute_async, fetched, ledger_for, prepare
from .engine.ledger import Listener
from .run.stages import Action, SyncResult


async def sync(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Fetch what the selected contexts need; raises FilesFailed if any file failed."""
    return fetched(await execute_async(prepare(Action.sync, options), ledger_for(on_event)))


async def plan(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """What a sync would do, fetching nothing but the rules it must read."""
    return await execute_async(
        prepare(Action.sync, {**options, "dry_run": True}), ledger_for(on_event)
    )


async def check(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Missing and corrupt files (`result.problems`)."""
    return await execute_async(prepare(Action.check, options), ledger_for(on_event))


async def repair(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Check, then fetch exactly what the check found."""
    return fetched(await execute_async(prepare(Action.repair, options), ledger_for(on_event)))


async def purge(*, on_event: Listener | None = None, **options: Unpack[Options]) -> SyncResult:
    """Remove the observatory's files that the selection does not need."""
    return await execute_async(prepare(Action.purge, options), ledger_for(on_event))


async def cache_key(*, on_event: Listener | None = None, **options: Unpack[Options]) -> str:
    """A key that changes whenever the selection's files do: for CI caches."""
    return (await execute_async(prepare(Action.key, options), ledger_for(on_event))).key
