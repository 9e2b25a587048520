"""crds-s3-sync: fill a CRDS cache from S3 or a CRDS server, planned, concurrent and
SHA-1 verified.

The folders are the layers, each importing only from those listed before it:

- `errors`, `pool`: what every layer shares (the error kinds; bounded task pools,
  worker processes)
- `network/`: two sources behind one seam (`store`): a CRDS server
  (`server_source`, its JSON-RPC in `crds_rpc`) and S3 (`source`): `location`
  (bucket, prefix, endpoint; a server's file URL), `connection` (what a request
  is sent with: URL, proxy, CA bundle, keys), `environment` (those read from a
  plain environment) and `addressing` (botocore's, for every other
  configuration), `bodies` (every GET and HEAD, through obstore), `listing`
  (botocore's listings and region probe), `s3errors` (S3's answers as one
  line, secrets cut)
- `rules/`: what CRDS means: `names` (every name from the bucket checked),
  `server_config`, `mapping` (parsed with `ast`, never executed), `pickles`
  (HST's context pickles, by a restricted unpickler), `walker` (contexts ->
  mappings -> references), `layout` (where crds looks for each file), `plans`
  (the plan as data: `FileSpec`s; its cache key and shards)
- `cache/`: the cache on disk: `durable` (flushed before visible), `workfiles`
  and `locks` (work in progress, shared caches), `partial` (a big file's parts
  across runs), `verified` (what each file looked like when verified),
  `mapping_index`, `crds_config` (the files crds reads), `audit` (check,
  purge), `organize`
- `engine/`: moving bytes: `pacer` (the one window of requests in flight,
  `window`, and the one retry policy), `ledger` (the one record of events every
  view reads), `transfer` (the plan's files, each found valid or fetched),
  `whole` (a file as one GET), `ranged` (big files in parts), `platforms`
- `run/`: one sync: `options` (declared once, checked before any request),
  `settings` (flags, CRDS_* variables, presets), `sources` (S3 or a server),
  `server` (what a server says before a sync), `reads` (planning's reads),
  `upkeep` (the cache around a transfer), `stages` (the order of it all)
- on top, `api` and `aio` (the Python API) and `cli/` (the command: `flags`,
  `app`, `views` of the ledger, `outcomes`, `command` for exit codes); `demo`
  serves a local bucket built from real CRDS rules
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import aio
    from .api import FilesFailed, Options, cache_key, check, plan, purge, repair, sync
    from .engine import ledger as events
    from .errors import SyncError
    from .run.stages import SyncResult

# Where each name of the API lives, imported when first asked for: a worker process
# that reads HST's pickles imports `rules.pickles`, and with it this package, and
# needs none of the network layer (26 MB a process).
_EXPORTS = {
    "aio": ("aio", None),
    "FilesFailed": ("api", "FilesFailed"),
    "Options": ("api", "Options"),
    "cache_key": ("api", "cache_key"),
    "check": ("api", "check"),
    "plan": ("api", "plan"),
    "purge": ("api", "purge"),
    "repair": ("api", "repair"),
    "sync": ("api", "sync"),
    "events": ("engine.ledger", None),
    "SyncError": ("errors", "SyncError"),
    "SyncResult": ("run.stages", "SyncResult"),
}

__all__ = [
    "FilesFailed",
    "Options",
    "SyncError",
    "SyncResult",
    "aio",
    "cache_key",
    "check",
    "events",
    "plan",
    "purge",
    "repair",
    "sync",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    found = importlib.import_module(f"{__name__}.{module}")
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value
    return value
