"""The least a verified, durable sync must do, in Python on crds-s3-sync's engine.

For each key of a list: GET it with obstore (anonymous, retries off, as `network/bodies.py`
sets it up), check its size and SHA-1, write it under a new temporary name (O_EXCL),
rename it into place. Small files whole, 64 in flight; a file of 64 MiB or more as 8 MiB
ranged parts, 8 in flight, each written at its offset, hashed in order. Durable (the
default): small files flushed in batches of 256 (one `syncfs`, then the renames, then
the directories' fsync), a big one `fsync`ed before its rename. Nothing else: no
server_config or mappings, no plan, no look at the cache, no ledger, no pacer, no
progress, no locks. `bench.py --tools floor` times it beside the tools, on the same
disk; what crds-s3-sync takes beyond it is the cost of everything this leaves out, and
what this takes beyond a peer is what Python and the engine cost.

    floor.py ENDPOINT BUCKET KEYS DEST [--no-fsync] [--ca CA]

KEYS: one `key size sha1` per line (keys relative to the bucket).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import obstore
from obstore.store import S3Store

SMALL_IN_FLIGHT, BATCH = 64, 256  # 256 in flight: 2.7 times the CPU on HTTPS here
PART, PARTS_IN_FLIGHT, BIG = 8 << 20, 8, 64 << 20
SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs  # Linux; os.syncfs is Python 3.12's


def store(endpoint: str, bucket: str, ca: str | None) -> S3Store:
    options = {"allow_http": True, "http1_only": True, "pool_max_idle_per_host": "256"}
    if ca:
        options["root_certificate"] = Path(ca).read_text()  # PEM text, not a path
    return S3Store(
        bucket,
        config={"endpoint": endpoint, "region": "us-east-1", "skip_signature": True},
        client_options=options,  # type: ignore[arg-type]
        retry_config={"max_retries": 0, "retry_timeout": timedelta(days=1)},  # type: ignore[typeddict-item]
    )


def write_new(path: str, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = data
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def flush(batch: list[tuple[str, str]], dest: str) -> None:
    fd = os.open(dest, os.O_RDONLY)
    try:
        SYNCFS(fd)
    finally:
        os.close(fd)
    for temp, final in batch:
        os.replace(temp, final)
    for directory in {os.path.dirname(final) for _, final in batch}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def small(s3: S3Store, items: list[tuple[str, int, str]], dest: str, durable: bool) -> None:
    loop = asyncio.get_running_loop()
    queue = iter(items)
    waiting: list[tuple[str, str]] = []
    flushes: list[asyncio.Future[None]] = []

    async def worker() -> None:
        for key, size, sha1 in queue:
            data = memoryview(await (await obstore.get_async(s3, key)).bytes_async())
            if len(data) != size or hashlib.sha1(data).hexdigest() != sha1:
                raise SystemExit(f"{key}: wrong size or SHA-1")
            final = os.path.join(dest, key)
            temp = f"{final}.part"
            write_new(temp, data)
            if not durable:
                os.replace(temp, final)
                continue
            waiting.append((temp, final))
            if len(waiting) >= BATCH:
                flushes.append(loop.run_in_executor(None, flush, waiting[:], dest))
                waiting.clear()

    await asyncio.gather(*(worker() for _ in range(SMALL_IN_FLIGHT)))
    if waiting:
        flushes.append(loop.run_in_executor(None, flush, waiting, dest))
    await asyncio.gather(*flushes)


async def big(s3: S3Store, key: str, size: int, sha1: str, dest: str, durable: bool) -> None:
    loop = asyncio.get_running_loop()
    final = os.path.join(dest, key)
    temp = f"{final}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    digest = hashlib.sha1()
    hashing = ThreadPoolExecutor(1)  # in order, off the loop
    writing = ThreadPoolExecutor(2)
    offsets = iter(range(0, size, PART))
    parts: dict[int, asyncio.Future[bytes]] = {}

    async def get(offset: int) -> memoryview:
        end = min(offset + PART, size)
        data = memoryview(await obstore.get_range_async(s3, key, start=offset, end=end))
        await loop.run_in_executor(writing, os.pwrite, fd, data, offset)
        return data

    for offset in offsets:
        parts[offset] = asyncio.ensure_future(get(offset))
        if len(parts) >= PARTS_IN_FLIGHT:
            break
    for offset in range(0, size, PART):
        data = await parts.pop(offset)
        following = next(offsets, None)
        if following is not None:
            parts[following] = asyncio.ensure_future(get(following))
        await loop.run_in_executor(hashing, digest.update, data)
    if digest.hexdigest() != sha1:
        raise SystemExit(f"{key}: wrong SHA-1")
    if durable:
        await loop.run_in_executor(None, os.fsync, fd)
    os.close(fd)
    os.replace(temp, final)


async def main(args: argparse.Namespace) -> None:
    s3 = store(args.endpoint, args.bucket, args.ca)
    items = []
    for line in Path(args.keys).read_text().splitlines():
        key, size, sha1 = line.split()
        items.append((key, int(size), sha1))
    dest = str(args.dest)
    for directory in {os.path.dirname(os.path.join(dest, key)) for key, _, _ in items}:
        os.makedirs(directory, exist_ok=True)
    durable = not args.no_fsync
    await asyncio.gather(
        small(s3, [i for i in items if i[1] < BIG], dest, durable),
        *(big(s3, *i, dest, durable) for i in items if i[1] >= BIG),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("endpoint", "bucket", "keys", "dest"):
        parser.add_argument(name)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--ca")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
