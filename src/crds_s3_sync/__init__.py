"""crds-s3-sync: fill a CRDS cache from S3, planned, concurrent and SHA-1 verified.

A sync runs these stages, each in its own module (`stages.py` runs them in order):

- `settings`: flags, CRDS_* environment variables and presets -> `Settings`
- `source`: the one seam to S3: listing and HEADs through botocore, GETs on a
  faster path that asks botocore for everything network-specific:
  `addressing` (endpoint, bucket region, signing), `connection` (CA bundle,
  proxies), `s3errors` (S3's answers as one line, secrets cut), `retry` (the one
  retry policy), `concurrency` (the run's one limit on requests in flight, a
  window found by measuring throughput); `bulk` reads bodies over 1 MiB on
  worker threads, straight into the file
- `server_config`: CRDS's server_config literal and its `download_metadata`
- `mapping`: .pmap/.imap/.rmap files parsed with `ast`, never executed
- `pickles`: HST's context pickles read by a restricted unpickler, never `pickle.loads`
- `reads`: planning's reads (server_config, which contexts, each mapping or
  pickle), from the cache when it holds a valid copy, bounded in size
- `walker`: chosen contexts -> every mapping and reference they need;
  `mapping_index` remembers what each cached mapping names, so re-runs skip parsing
- `plans`: that walk as a list of `FileSpec` (name, kind, size, SHA-1, cache path);
  its cache key and shards
- `layout`: where files go in the cache (flat | instrument) and crds's config files
- `audit`: the cache against the plan (`--check`, `--repair`, `--purge`);
  `organize` moves a cache's references into the other layout
- `locks`: one downloader per file over 1 MiB across processes sharing a cache,
  lock-free where the file system has no locks; `workfiles` names work in
  progress after its run (which holds a run file) and sweeps away that of runs
  that are gone
- `verified`: what each file looked like when verified, so a re-run re-hashes
  exactly the files changed since; `upkeep` readies the cache before a transfer,
  records what it verified after, and purges
- `transfer`: the worker pool that downloads, verifies and renames into place;
  `ranged` fetches a large file in parts (as many at once as pay), hashed in
  order from memory, and `partial` keeps its completed parts across runs;
  `cores` forks helper processes (one event loop per core) that take shares
  of the small files; `durable` flushes each file before its rename, small
  ones in batches
- `progress`: the rich dashboard, plain log lines, JSON lines, or silence;
  `outcomes`: what each action tells at its end (stdout, summary, JSON, exit)
- `cli`: the `crds-s3-sync` command; `command` turns every failure into one
  line and an exit code; `names` guards every name from the bucket;
  `platforms` checks the operating system and its open-file limit
- `demo`: a local S3 server with a bucket built from real CRDS rules

The Python API (`api`, and `aio` for its async forms) is what the command does, as
functions: `sync`, `plan`, `check`, `repair`, `purge` and `cache_key`.
"""

__version__ = "0.1.0"

from . import aio
from .api import FilesFailed, Options, cache_key, check, plan, purge, repair, sync
from .errors import SyncError
from .run.stages import SyncResult

__all__ = [
    "FilesFailed",
    "Options",
    "SyncError",
    "SyncResult",
    "aio",
    "cache_key",
    "check",
    "plan",
    "purge",
    "repair",
    "sync",
]
