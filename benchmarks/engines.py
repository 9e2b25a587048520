"""Which one HTTP stack should carry every object body? Measured here, not guessed.

crds-s3-sync moves object bytes on two stacks today: aiohttp on the event loop for small
bodies (`small.py`) and blocking `http.client` connections in worker threads for big ones
(`bulk.py`). Each carries its own TLS trust, proxy tunnelling, S3 error parsing and
retry hooks, so keeping one halves that code. The two workloads pull in opposite
directions (thousands of tiny GETs want cheap requests; one 2 GiB object wants cheap
bytes), so every candidate runs both, under the same rules:

    small  5,000 files of 2-8 KiB: GET each (64 in flight), SHA-1 it, write it under a
           temporary name in a directory on the real disk, rename it into place. (The
           empty temporary files are made before the run: see `precreate`.)
    large  one 2 GiB file: ranged GETs of 8 MiB (8 in flight; awscrt splits the one GET
           itself), SHA-1 of all bytes in order, `pwrite` at their offsets, one `fsync`
           at the end (the time before it is reported too).

Engines (`--engines`): aiohttp (on uvloop, all on the loop), aiohttp+thread (aiohttp on
uvloop, big parts hashed and written by one worker thread; its small case would be
aiohttp's), threads (blocking http.client connections, one per worker thread), obstore
(Rust object_store's S3Store, anonymous, retries off) and awscrt (the AWS CRT's
S3Client, anonymous, retries off). `ENGINE@N` holds N requests in flight on the small
workload instead of 64 (`threads@16`: 16 threads).

The objects are served by nginx on 127.0.0.1 as path-style /<bucket>/<key>, over plain
HTTP and over HTTPS with a test CA (made as bench.py makes its own); each engine is told
to trust the CA by its own option, and no CA or proxy variable of the calling shell
reaches it. Each measurement runs in its own process: wall time from start to exit (so
imports count), user+sys CPU from `wait4`, peak RSS from the process's own VmHWM (wait4's
ru_maxrss would include the RSS this process had when it forked the child). Engines
alternate. The machine may be shared: each run also records how much of the CPUs others
used meanwhile (all busy time, less the child's and nginx's), and rounds go on (up to
`--rounds`) until each cell has `--repeat` clean runs, whose medians are reported.
`--questions` instead tries what obstore and awscrt do with a custom CA, a CONNECT proxy,
S3 error answers, retries and caller-supplied credentials.

    .venv/bin/python benchmarks/engines.py               # everything, 3 clean runs each
    .venv/bin/python benchmarks/engines.py --workloads small --engines aiohttp,obstore
    .venv/bin/python benchmarks/engines.py --questions
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from local_nginx import Tls, free_port, make_tls, run_nginx

if TYPE_CHECKING:
    import asyncio

HERE = Path(__file__).resolve().parent
WORK = HERE / ".data" / "engines"
SRV = WORK / "srv"
DEST = WORK / "dest"  # on the disk the repository is on: not tmpfs
BUCKET = "bench"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SMALL_FILES, SMALL_INFLIGHT = 5000, 64
LARGE_SIZE, PART, PARTS_INFLIGHT = 2 * GiB, 8 * MiB, 8
ENGINES = ("aiohttp", "aiohttp+thread", "threads", "obstore", "awscrt")
WORKLOADS = ("small", "large")
LINKS = ("http", "https")
TIMEOUT = 300.0  # seconds for one measured process, then it is killed and the run failed
TICK = os.sysconf("SC_CLK_TCK")
# Where a shell may point clients at CAs or proxies: children get none of them.
SCRUBBED = (
    "AWS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
# What each engine imports, timed in a fresh interpreter.
IMPORTS = {
    "aiohttp": "import asyncio, aiohttp, uvloop",
    "aiohttp+thread": "import asyncio, concurrent.futures, aiohttp, uvloop",
    "threads": "import http.client, ssl, threading",
    "obstore": "import asyncio, uvloop, obstore, obstore.store",
    "awscrt": "import awscrt.s3, awscrt.http, awscrt.io",
}
# S3's error answers, as nginx gives them on the error locations (--questions).
S3_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "denied": (403, "AccessDenied", "Access Denied"),
    "nokey": (404, "NoSuchKey", "The specified key does not exist."),
}


# -- the served objects and the server -----------------------------------------------------


def build(workload: str) -> list[list[Any]]:
    """The workload's objects under SRV (made once, kept while the manifest matches):
    [key, size, sha1] each."""
    manifest = SRV / f"{workload}.json"
    if manifest.exists():
        items = json.loads(manifest.read_text())
        paths = [(SRV / BUCKET / key, size) for key, size, _ in items]
        if all(p.exists() and p.stat().st_size == size for p, size in paths):
            return items
    root = SRV / BUCKET / workload
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    items = []
    if workload == "small":
        sizes = [
            2 * KiB + int.from_bytes(os.urandom(2)) % (6 * KiB + 1) for _ in range(SMALL_FILES)
        ]
        for n, size in enumerate(sizes):
            data = os.urandom(size)
            (root / f"f{n:05d}.fits").write_bytes(data)
            items.append([f"{workload}/f{n:05d}.fits", size, hashlib.sha1(data).hexdigest()])
    else:
        digest = hashlib.sha1()
        with (root / "big.fits").open("wb") as out:
            for _ in range(LARGE_SIZE // (64 * MiB)):
                block = os.urandom(64 * MiB)
                out.write(block)
                digest.update(block)
        items.append([f"{workload}/big.fits", LARGE_SIZE, digest.hexdigest()])
    manifest.write_text(json.dumps(items))
    return items


def error_locations() -> str:
    """Locations answering as S3 does when it refuses: status and an XML <Error>."""
    out = []
    for name, (status, code, message) in S3_ERRORS.items():
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\\n<Error><Code>'
            f"{code}</Code><Message>{message}</Message><RequestId>4442587FB7D0A2F9"
            "</RequestId><HostId>bench</HostId></Error>"
        )
        out.append(
            f"location = /{BUCKET}/err/{name} {{ default_type application/xml; "
            f"return {status} '{body}'; }}"
        )
    return " ".join(out)


def start_nginx(tls: Tls, log: Path | None) -> tuple[subprocess.Popen, dict[str, str]]:
    """nginx on 127.0.0.1: one plain and one TLS server over SRV, HTTP/1.1 keep-alive."""
    ports = {link: free_port() for link in LINKS}
    logging = f"access_log {log} probe;" if log else "access_log off;"
    locations = f"location / {{ try_files $uri =404; }} {error_locations()}"
    listen = {
        "http": f"listen 127.0.0.1:{ports['http']};",
        "https": (
            f"listen 127.0.0.1:{ports['https']} ssl; ssl_certificate {tls.cert}; "
            f"ssl_certificate_key {tls.key}; ssl_protocols TLSv1.2 TLSv1.3;"
        ),
    }
    servers = "\n".join(
        f"  server {{ {listen[link]} root {SRV}; {logging} {locations} }}" for link in LINKS
    )
    conf = WORK / "nginx.conf"
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""
daemon off; worker_processes 2; pid {WORK}/nginx.pid; error_log stderr error;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  log_format probe '$request_method $request_uri $status "$http_authorization" '
                   '"$http_range" "$http_user_agent"';
  default_type application/octet-stream;
  client_body_temp_path {WORK}/tmp; proxy_temp_path {WORK}/tmp;
  fastcgi_temp_path {WORK}/tmp; uwsgi_temp_path {WORK}/tmp; scgi_temp_path {WORK}/tmp;
{servers}
}}""")
    server = run_nginx(WORK, conf, list(ports.values()))
    return server, {
        "http": f"http://127.0.0.1:{ports['http']}",
        "https": f"https://127.0.0.1:{ports['https']}",
    }


# -- in the measured process: what every engine shares -------------------------------------


@dataclass
class Setup:
    """What one measured process is told: where to fetch from, what, and where to."""

    engine: str
    workload: str
    endpoint: str
    ca: str | None
    dest: Path
    items: list[list[Any]]
    inflight: int = SMALL_INFLIGHT  # small workload: requests in flight
    first: list[float] = field(default_factory=list)  # when the first GET completed

    @property
    def hostport(self) -> str:
        return urlsplit(self.endpoint).netloc

    @property
    def tls(self) -> bool:
        return self.endpoint.startswith("https:")

    def path(self, key: str) -> str:
        return f"/{BUCKET}/{key}"

    def got_one(self) -> None:
        if not self.first:
            self.first.append(time.monotonic())

    def ssl_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=self.ca) if self.tls else None


class Mismatch(Exception):
    """A body whose size or SHA-1 is not the object's."""


def settle(setup: Setup, key: str, size: int, sha1: str, data: Any) -> None:
    """Check one small body, write it under a temporary name, rename it into place."""
    if len(data) != size:
        raise Mismatch(f"{key}: {len(data)} bytes, expected {size}")
    if hashlib.sha1(data).hexdigest() != sha1:
        raise Mismatch(f"{key}: SHA-1 differs")
    name = key.rsplit("/", 1)[1]
    temp = f"{setup.dest}/.{name}.part"
    fd = os.open(temp, os.O_WRONLY)  # made empty before the run (see `precreate`)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(temp, f"{setup.dest}/{name}")


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


@dataclass
class Big:
    """The large file being written: its descriptor, running SHA-1 and parts."""

    setup: Setup
    fd: int = -1
    digest: Any = field(default_factory=hashlib.sha1)

    @property
    def key(self) -> str:
        return self.setup.items[0][0]

    @property
    def size(self) -> int:
        return self.setup.items[0][1]

    def parts(self) -> list[tuple[int, int, int]]:
        return [
            (n, offset, min(PART, self.size - offset))
            for n, offset in enumerate(range(0, self.size, PART))
        ]

    def __enter__(self) -> Big:
        self.temp = f"{self.setup.dest}/.big.fits.part"
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def finish(self) -> dict[str, float]:
        """Check the SHA-1, then fsync and rename: the times before and after the fsync."""
        if self.digest.hexdigest() != self.setup.items[0][2]:
            raise Mismatch(f"{self.key}: SHA-1 differs")
        before = time.monotonic()
        os.fsync(self.fd)
        os.rename(self.temp, f"{self.setup.dest}/big.fits")
        return {"nofsync": before}


class Turns:
    """Hands each part its turn to be hashed, in order, on one event loop."""

    def __init__(self) -> None:
        self.next = 0
        self.waiting: dict[int, asyncio.Future[None]] = {}

    async def wait(self, n: int) -> None:
        if n != self.next:
            import asyncio

            future = asyncio.get_running_loop().create_future()
            self.waiting[n] = future
            await future

    def done(self, n: int) -> None:
        self.next = n + 1
        future = self.waiting.pop(n + 1, None)
        if future is not None:
            future.set_result(None)


class ThreadTurns:
    """The same for threads."""

    def __init__(self) -> None:
        self.next = 0
        self.changed = threading.Condition()

    def wait(self, n: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.next == n)

    def done(self, n: int) -> None:
        with self.changed:
            self.next = n + 1
            self.changed.notify_all()


async def small_async(setup: Setup, fetch: Callable[[str, int], Awaitable[Any]]) -> None:
    """SMALL_INFLIGHT coroutines, each taking the next file when it is done with one."""
    import asyncio

    todo = iter(setup.items)

    async def worker() -> None:
        for key, size, sha1 in todo:
            data = await fetch(key, size)
            setup.got_one()
            settle(setup, key, size, sha1, data)

    await asyncio.gather(*(worker() for _ in range(setup.inflight)))


async def large_async(
    big: Big,
    fetch: Callable[[int, int], Awaitable[Any]],
    consume: Callable[[Any, int], Awaitable[None]] | None = None,
) -> None:
    """PARTS_INFLIGHT coroutines, each fetching a part, writing it, and hashing it in its
    turn (so at most PARTS_INFLIGHT parts are held). `consume(data, offset)`, if given,
    must write and hash a part itself, in the order it is called."""
    import asyncio

    todo, turns = iter(big.parts()), Turns()

    async def worker() -> None:
        for n, offset, length in todo:
            data = await fetch(offset, length)
            big.setup.got_one()
            if len(data) != length:
                raise Mismatch(f"part {n}: {len(data)} bytes, expected {length}")
            if consume is None:
                pwrite_all(big.fd, data, offset)
                await turns.wait(n)
                big.digest.update(data)
                turns.done(n)
            else:
                await turns.wait(n)
                done = consume(data, offset)  # queued in order before the next part's turn
                turns.done(n)
                await done

    await asyncio.gather(*(worker() for _ in range(PARTS_INFLIGHT)))


def run_threads(count: int, work: Callable[[], None]) -> None:
    """`count` threads running `work`; the first failure is raised."""
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


# -- the engines -----------------------------------------------------------------------------


def run_aiohttp(setup: Setup, hybrid: bool = False) -> dict[str, float]:
    import asyncio

    import aiohttp
    import uvloop

    async def main() -> dict[str, float]:
        limit = setup.inflight if setup.workload == "small" else PARTS_INFLIGHT
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=setup.ssl_context() or True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
            auto_decompress=False,
        )
        async with session:
            if setup.workload == "small":

                async def fetch_small(key: str, size: int) -> bytes:
                    url = setup.endpoint + setup.path(key)
                    async with session.get(url, allow_redirects=False) as response:
                        if response.status != 200:
                            raise Mismatch(f"{key}: HTTP {response.status}")
                        return await response.read()

                await small_async(setup, fetch_small)
                return {}
            with Big(setup) as big:
                url = setup.endpoint + setup.path(big.key)

                async def fetch_part(offset: int, length: int) -> bytes:
                    headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
                    async with session.get(url, headers=headers) as response:
                        if response.status != 206:
                            raise Mismatch(f"HTTP {response.status}")
                        return await response.read()

                consume = None
                if hybrid:
                    import concurrent.futures

                    pool = concurrent.futures.ThreadPoolExecutor(1)  # FIFO: keeps the order
                    loop = asyncio.get_running_loop()

                    def write_and_hash(data: bytes, offset: int) -> None:
                        pwrite_all(big.fd, data, offset)
                        big.digest.update(data)

                    def consume(data: Any, offset: int) -> Awaitable[None]:
                        return loop.run_in_executor(pool, write_and_hash, data, offset)

                await large_async(big, fetch_part, consume)
                return big.finish()

    return uvloop.run(main())


def run_threads_engine(setup: Setup) -> dict[str, float]:
    import http.client

    context = setup.ssl_context()
    host, port = setup.hostport.split(":")

    def connect() -> http.client.HTTPConnection:
        if context is not None:
            return http.client.HTTPSConnection(host, int(port), timeout=60, context=context)
        return http.client.HTTPConnection(host, int(port), timeout=60)

    if setup.workload == "small":
        todo = iter(setup.items)

        def fetch_small() -> None:
            connection = connect()
            try:
                for key, size, sha1 in todo:  # a list iterator: one item per next(), any thread
                    connection.request("GET", setup.path(key))
                    response = connection.getresponse()
                    data = response.read()
                    if response.status != 200:
                        raise Mismatch(f"{key}: HTTP {response.status}")
                    setup.got_one()
                    settle(setup, key, size, sha1, data)
            finally:
                connection.close()

        run_threads(setup.inflight, fetch_small)
        return {}
    with Big(setup) as big:
        todo, turns, path = iter(big.parts()), ThreadTurns(), setup.path(big.key)

        def fetch_parts() -> None:
            connection = connect()
            view = memoryview(bytearray(PART))
            try:
                for n, offset, length in todo:
                    headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    if response.status != 206:
                        raise Mismatch(f"HTTP {response.status}")
                    done = 0
                    while done < length:
                        got = response.readinto(view[done:length])
                        if not got:
                            raise Mismatch(f"part {n}: closed after {done} of {length}")
                        done += got
                    setup.got_one()
                    pwrite_all(big.fd, view[:length], offset)
                    turns.wait(n)
                    big.digest.update(view[:length])
                    turns.done(n)
            finally:
                connection.close()

        run_threads(PARTS_INFLIGHT, fetch_parts)
        return big.finish()


def obstore_store(endpoint: str, ca: str | None, **options: Any) -> Any:
    """An anonymous path-style S3Store on `endpoint` trusting `ca`, retries off."""
    from obstore.store import S3Store

    client: dict[str, Any] = {"allow_http": True, "timeout": "120s"}
    if ca:
        client["root_certificate"] = Path(ca).read_text()
    client |= options.pop("client_options", {})
    config: dict[str, Any] = {
        "endpoint": endpoint,
        "region": "us-east-1",
        "virtual_hosted_style_request": False,
    }
    if "credential_provider" not in options:
        config["skip_signature"] = True
    return S3Store(
        BUCKET,
        config=config,  # type: ignore[arg-type]
        client_options=client,  # type: ignore[arg-type]
        retry_config=options.pop("retry_config", {"max_retries": 0}),
        **options,
    )


def run_obstore(setup: Setup) -> dict[str, float]:
    import obstore
    import uvloop

    store = obstore_store(setup.endpoint, setup.ca)

    async def main() -> dict[str, float]:
        if setup.workload == "small":

            async def fetch_small(key: str, size: int) -> Any:
                result = await obstore.get_async(store, key)
                return await result.bytes_async()

            await small_async(setup, fetch_small)
            return {}
        with Big(setup) as big:

            async def fetch_part(offset: int, length: int) -> Any:
                return await obstore.get_range_async(store, big.key, start=offset, length=length)

            await large_async(big, fetch_part)
            return big.finish()

    return uvloop.run(main())


def awscrt_client(setup_tls: bool, ca: str | None, **options: Any) -> Any:
    """An anonymous S3Client (TLS trusting `ca` if given), retries off unless given."""
    from awscrt.io import ClientTlsContext, TlsContextOptions
    from awscrt.s3 import S3Client, S3RequestTlsMode, S3RetryConfig, S3RetryMode

    tls_options = None
    if setup_tls:
        context_options = TlsContextOptions()
        if ca:
            context_options.override_default_trust_store_from_path(None, ca)
        tls_options = ClientTlsContext(context_options).new_connection_options()
    options.setdefault("retry_config", S3RetryConfig(retry_mode=S3RetryMode.NONE))
    return S3Client(
        region="us-east-1",
        tls_mode=S3RequestTlsMode.ENABLED if setup_tls else S3RequestTlsMode.DISABLED,
        tls_connection_options=tls_options,
        part_size=PART,
        **options,
    )


def awscrt_get(setup: Setup, client: Any, key: str, **callbacks: Any) -> Any:
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.s3 import S3RequestType

    request = HttpRequest("GET", setup.path(key), HttpHeaders([("Host", setup.hostport)]))
    return client.make_request(type=S3RequestType.GET_OBJECT, request=request, **callbacks)


def run_awscrt(setup: Setup) -> dict[str, float]:
    client = awscrt_client(setup.tls, setup.ca)
    if setup.workload == "small":
        slots = threading.BoundedSemaphore(setup.inflight)
        failures: list[BaseException] = []
        live: dict[str, Any] = {}  # each request kept until it is done

        def start(key: str, size: int, sha1: str) -> None:
            chunks: list[bytes] = []

            def on_body(chunk: Any, offset: int, **_: Any) -> None:
                chunks.append(bytes(chunk))

            def on_done(error: BaseException | None, **_: Any) -> None:
                try:
                    if error is not None:
                        raise error
                    setup.got_one()
                    settle(setup, key, size, sha1, b"".join(chunks))
                except BaseException as exc:
                    failures.append(exc)
                finally:
                    live.pop(key, None)
                    slots.release()

            live[key] = awscrt_get(setup, client, key, on_body=on_body, on_done=on_done)

        for key, size, sha1 in setup.items:
            slots.acquire()
            if failures:
                slots.release()
                break
            start(key, size, sha1)
        for _ in range(setup.inflight):
            slots.acquire()
        if failures:
            raise failures[0]
        return {}
    with Big(setup) as big:
        position = [0]

        def on_body_big(chunk: Any, offset: int, **_: Any) -> None:
            if offset != position[0]:
                raise Mismatch(f"body at {offset}, expected {position[0]}")
            setup.got_one()
            pwrite_all(big.fd, chunk, offset)
            big.digest.update(chunk)
            position[0] += len(chunk)

        awscrt_get(setup, client, big.key, on_body=on_body_big).finished_future.result()
        if position[0] != big.size:
            raise Mismatch(f"{position[0]} bytes, expected {big.size}")
        return big.finish()


RUN: dict[str, Callable[[Setup], dict[str, float]]] = {
    "aiohttp": run_aiohttp,
    "aiohttp+thread": lambda setup: run_aiohttp(setup, hybrid=True),
    "threads": run_threads_engine,
    "obstore": run_obstore,
    "awscrt": run_awscrt,
}


def child(args: argparse.Namespace) -> None:
    """One measurement, in its own process: prints its times (time.monotonic) as JSON."""
    items = json.loads((SRV / f"{args.workload}.json").read_text())
    engine, _, inflight = args.child.partition("@")
    setup = Setup(engine, args.workload, args.endpoint, args.ca, Path(args.dest), items)
    setup.inflight = int(inflight or SMALL_INFLIGHT)
    begun = time.monotonic()
    times = RUN[engine](setup)
    ended = time.monotonic()
    # Peak RSS of this process since exec: wait4's ru_maxrss would also count the measuring
    # process's own RSS, which the child had when it was forked.
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
    times |= {"begun": begun, "ended": ended, "first": setup.first[0], "peak_kib": int(status)}
    print(json.dumps(times))


# -- the measuring process -------------------------------------------------------------------


@dataclass
class Sample:
    wall: float  # process start to exit
    precreate: float | None  # seconds the empty temporary files took to create, untimed
    cpu: float  # user + sys of the process
    sys: float  # of which sys
    rss: float  # peak, MiB (VmHWM)
    first: float  # process start to the first completed GET
    transfer: float  # in the process: from the engine's start to done, before any fsync
    nofsync: float | None  # process start to the last byte written and hashed (large)
    server: float  # CPU seconds nginx spent meanwhile
    others: float  # share of all CPUs' time others used meanwhile (neither us nor nginx)


class Failed(Exception):
    pass


def machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and of its direct children (nginx's master and workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0.0
    for each in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def precreate(dest: Path, items: list[list[Any]]) -> float:
    """Create the small workload's temporary files, empty, before the run: seconds taken.

    Allocating inodes costs the same whatever engine fetched the bytes, and on this
    machine's ext4 (no journal) it swings ten-fold: ext4 then skips inodes freed in the
    last 60 s (360 s while their table block is dirty), scanning past each, so any mass
    deletion on the file system (ours or others') slows creation for minutes. The run
    still opens, writes and renames each file on the disk."""
    start = time.monotonic()
    for key, _, _ in items:
        os.close(os.open(dest / f".{key.rsplit('/', 1)[1]}.part", os.O_WRONLY | os.O_CREAT))
    os.sync()
    return time.monotonic() - start


def measure(
    engine: str, workload: str, endpoint: str, ca: str | None, server: int, dest: Path
) -> Sample:
    """One run in its own process, into `dest` (a new directory; the small workload's
    files are left there until the end: see `precreate`)."""
    dest.mkdir(parents=True)
    made = None
    if workload == "small":
        made = precreate(dest, json.loads((SRV / "small.json").read_text()))
    os.sync()  # the last run's writeback must not land on this one's clock
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", engine]
    command += ["--workload", workload, "--endpoint", endpoint, "--dest", str(dest)]
    command += ["--ca", ca] if ca else []
    log = WORK / f"{engine.replace('@', '-')}-{workload}.log"
    with log.open("w") as errors:
        machine, served = machine_busy(), process_cpu(server)
        start = time.monotonic()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=errors, start_new_session=True
        )
        timer = threading.Timer(TIMEOUT, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        try:
            assert process.stdout is not None
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            timer.cancel()
        wall = time.monotonic() - start
        machine, served = machine_busy() - machine, process_cpu(server) - served
    if workload == "large":
        shutil.rmtree(dest, ignore_errors=True)  # one inode: harmless
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise Failed(f"exit {code}: {lines[-1][:200] if lines else ''} ({log})")
    times = json.loads(output)
    nofsync = times.get("nofsync")
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(
        wall=wall,
        precreate=made,
        cpu=cpu,
        sys=usage.ru_stime,
        server=served,
        others=max(0.0, machine - cpu - served) / (wall * (os.cpu_count() or 1)),
        rss=times["peak_kib"] / 1024,
        first=times["first"] - start,
        transfer=times.get("nofsync", times["ended"]) - times["begun"],
        nofsync=None if nofsync is None else nofsync - start,
    )


def import_time(engine: str, rounds: int = 3) -> float:
    """Median seconds to import the engine's modules in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); {IMPORTS[engine]}; "
    code += "print(time.perf_counter() - t)"
    out = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(rounds)
    ]
    return statistics.median(out)


def interpreter_start(rounds: int = 3) -> float:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy(window: float = 1.0) -> float:
    """The share of all CPUs' time spent busy (by anyone) over the last `window` s."""

    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total, idle = ticks()
    time.sleep(window)
    total2, idle2 = ticks()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def needs(samples: list[Sample] | str, wanted: int, clean: float) -> bool:
    """Whether a cell wants another run: fewer than `wanted` clean samples so far."""
    return isinstance(samples, list) and sum(s.others <= clean for s in samples) < wanted


def wait_quiet(limit: float, patience: float) -> float:
    """Wait (up to `patience` s) for a second in which the CPUs were at most `limit` busy:
    others share this machine. The share busy of the last second waited."""
    deadline = time.monotonic() + patience
    while True:
        share = busy()
        if share <= limit or time.monotonic() > deadline:
            return share


def table(results: dict[tuple[str, str, str], list[Sample] | str], clean: float) -> str:
    """Medians over the clean samples of each cell (over all, marked, if none was clean)."""
    lines = [
        "| workload | link | engine | wall s | min | before fsync s | transfer s | MiB/s "
        "| CPU s | nginx CPU s | peak RSS MiB | first GET s | clean runs | others |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, link, engine), samples in results.items():
        if isinstance(samples, str):
            lines.append(f"| {workload} | {link} | {engine} | failed: {samples} |||||||||||")
            continue
        if not samples:
            continue
        used = [s for s in samples if s.others <= clean] or samples

        def median(values: list[float]) -> float:
            return statistics.median(values)

        nofsync = [s.nofsync for s in used if s.nofsync is not None]
        volume = SMALL_BYTES if workload == "small" else LARGE_SIZE
        transfer = median([s.transfer for s in used])
        lines.append(
            f"| {workload} | {link} | {engine} | {median([s.wall for s in used]):.2f} "
            f"| {min(s.wall for s in used):.2f} "
            f"| {f'{median(nofsync):.2f}' if nofsync else '-'} "
            f"| {transfer:.2f} | {volume / MiB / transfer:.0f} "
            f"| {median([s.cpu for s in used]):.2f} | {median([s.server for s in used]):.2f} "
            f"| {median([s.rss for s in used]):.0f} | {median([s.first for s in used]):.3f} "
            f"| {sum(s.others <= clean for s in samples)}/{len(samples)} "
            f"| {max(s.others for s in used):.0%} |"
        )
    return "\n".join(lines)


SMALL_BYTES = 0  # set once the small workload is built


def bench(args: argparse.Namespace) -> None:
    global SMALL_BYTES
    engines = args.engines.split(",")
    workloads = args.workloads.split(",")
    links = args.links.split(",")
    for name in engines:
        if name.partition("@")[0] not in RUN:
            raise SystemExit(f"unknown engine {name}: choose from {', '.join(ENGINES)}")
    print(f"load average before building: {load()} (nproc {os.cpu_count()})", flush=True)
    built = {workload: build(workload) for workload in workloads}
    if "small" in built:
        SMALL_BYTES = sum(size for _, size, _ in built["small"])
    tls = make_tls(WORK / "tls")
    print(f"load average before measuring: {load()}", flush=True)
    starts = {e: import_time(e) for e in dict.fromkeys(e.partition("@")[0] for e in engines)}
    bare = interpreter_start()
    server, endpoints = start_nginx(tls, None)
    results: dict[tuple[str, str, str], list[Sample] | str] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so nginx is stopped
    if DEST.exists():  # deleted at the end, not now (see `measure`)
        DEST.rename(WORK / f"trash-{time.time_ns()}")
    try:
        for workload in workloads:
            cells = [
                (workload, link, engine)
                for engine in engines
                for link in links
                if not (engine.startswith("aiohttp+thread") and workload == "small")
                and not ("@" in engine and workload == "large")
            ]  # aiohttp+thread's small case is aiohttp's; @N changes only the small case
            results |= {cell: [] for cell in cells}
            for round_ in range(args.rounds):
                wanted = [c for c in cells if needs(results[c], args.repeat, args.clean)]
                if not wanted:
                    break
                shift = round_ % len(engines)
                order = engines[shift:] + engines[:shift]  # engines alternate
                for link in links:
                    for engine in order:
                        cell = (workload, link, engine)
                        if cell not in wanted:
                            continue
                        samples = results[cell]
                        assert isinstance(samples, list)
                        ca = str(tls.ca) if link == "https" else None
                        wait_quiet(args.quiet, args.patience)
                        dest = DEST / f"{workload}-{link}-{engine.replace('@', '-')}-{round_}"
                        try:
                            sample = measure(
                                engine, workload, endpoints[link], ca, server.pid, dest
                            )
                        except Failed as exc:
                            results[cell] = str(exc)
                            print(f"{workload} {link} {engine}: {exc}", flush=True)
                            continue
                        samples.append(sample)
                        print(
                            f"{workload} {link} {engine} round {round_ + 1}: "
                            f"{sample.wall:.2f} s wall, {sample.cpu:.2f} s CPU "
                            f"({sample.sys:.2f} sys), nginx {sample.server:.2f} s, "
                            f"{sample.rss:.0f} MiB; others used {sample.others:.0%} of the "
                            f"CPUs meanwhile{'' if sample.others <= args.clean else ' (noisy)'}"
                            + (
                                f"; temporary files made in {sample.precreate:.2f} s"
                                if sample.precreate is not None
                                else ""
                            ),
                            flush=True,
                        )
    finally:
        server.terminate()
        server.wait()
    command = " ".join(["benchmarks/engines.py", *sys.argv[1:]])
    report = [
        f"`{command}`: medians of the clean runs (others used at most {args.clean:.0%} of "
        f"the CPUs meanwhile; up to {args.rounds} rounds, until {args.repeat} were clean; a "
        "cell with none clean shows all its runs); others = the most others used in the runs "
        "shown. wall = process start to exit (interpreter start and imports included); "
        "min = least wall; before fsync = process start to the last byte written and "
        "hashed; transfer = in the process, from the engine's start (its imports included) "
        "to done, before the fsync; MiB/s over transfer; CPU = user+sys of the process; "
        "nginx CPU = the server's meanwhile; first GET = process start to the first "
        "completed GET.",
        "",
        table(results, args.clean),
        "",
        f"Interpreter start (`python -c pass`): {bare:.3f} s. Imports in a fresh "
        "interpreter (median of 3):",
        "",
        "| engine | imports | s |",
        "|---|---|---|",
        *(f"| {e} | `{IMPORTS[e]}` | {t:.3f} |" for e, t in starts.items()),
    ]
    text = "\n".join(report)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for trash in [DEST, *WORK.glob("trash-*")]:
        shutil.rmtree(trash, ignore_errors=True)


# -- the questions: custom CA, proxy, S3 errors, retries, credentials --------------------------


class Proxy:
    """A plain-HTTP proxy on 127.0.0.1: CONNECT tunnels and absolute-form requests, to
    127.0.0.1 only. `seen` logs each request's line and whether it carried credentials."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen: list[str] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            header, rest = head.split(b"\r\n\r\n", 1)
            lines = header.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            auth = [h for h in lines[1:] if h.lower().startswith("proxy-authorization:")]
            who = base64.b64decode(auth[0].split()[-1]).decode() if auth else "no credentials"
            self.seen.append(f"{method} {target} ({who})")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = socket.create_connection((parts.hostname, parts.port or 80))
                kept = [h for h in lines[1:] if not h.lower().startswith("proxy-")]
                line = f"{method} {parts.path or '/'} {version}"
                upstream.sendall("\r\n".join([line, *kept]).encode("latin-1") + b"\r\n\r\n")
            upstream.sendall(rest)
            with upstream:
                relay(client, upstream)


def relay(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(peers), [], [], 30)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(1 << 20)
            if not data:
                return
            peers[sock].sendall(data)


def describe(exc: BaseException) -> str:
    """An exception as a caller sees it: its classes, attributes and text."""
    names = " < ".join(c.__name__ for c in type(exc).__mro__[:-2])
    attrs = {
        k: (v[:120] if isinstance(v, bytes | str) else v)
        for k, v in vars(exc).items()
        if not k.startswith("_")
    }
    text = " ".join(str(exc).split())
    return f"{type(exc).__module__}.{names}; attributes {attrs}; str: {text[:700]!r}"


def ask(args: argparse.Namespace) -> None:
    """One question, in its own process (environment variables are read at start-up)."""
    question, endpoint, ca = args.ask, args.endpoint, args.ca
    key = "small/f00000.fits"
    tls = endpoint.startswith("https:")
    calls: list[int] = []
    try:
        if question.startswith("obstore"):
            import obstore

            options: dict[str, Any] = {}
            if args.proxy:
                options["client_options"] = {"proxy_url": args.proxy}
            if question.endswith("retries-default"):
                from datetime import timedelta

                options["retry_config"] = {
                    "max_retries": 3,
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=10),
                        "max_backoff": timedelta(milliseconds=50),
                    },
                }
            if question.endswith("credentials"):

                def provider() -> dict[str, Any]:
                    calls.append(1)
                    return {
                        "access_key_id": "AKIDBENCHEXAMPLE",
                        "secret_access_key": "secret",
                        "token": None,
                        "expires_at": None,
                    }

                options["credential_provider"] = provider
            store = obstore_store(endpoint, ca if "ca-option" in question else None, **options)
            where = f"err/{args.error}" if args.error else key
            data = obstore.get(store, where).bytes()
        else:
            from awscrt.auth import AwsCredentials, AwsCredentialsProvider
            from awscrt.s3 import S3RetryConfig, S3RetryMode, create_default_s3_signing_config

            options = {}
            if question.endswith("retries-default"):
                options["retry_config"] = S3RetryConfig(
                    max_retries=3, backoff_scale_factor_ms=10, retry_mode=S3RetryMode.STANDARD
                )
            if question.endswith("credentials"):

                def get() -> Any:
                    calls.append(1)
                    return AwsCredentials("AKIDBENCHEXAMPLE", "secret")

                provider = AwsCredentialsProvider.new_delegate(get)
                options["signing_config"] = create_default_s3_signing_config(
                    region="us-east-1", credential_provider=provider
                )
            client = awscrt_client(tls, ca if "ca-option" in question else None, **options)
            setup = Setup("awscrt", "small", endpoint, None, Path("."), [])
            chunks: list[bytes] = []
            where = f"err/{args.error}" if args.error else key
            request = awscrt_get(
                setup, client, where, on_body=lambda chunk, **_: chunks.append(bytes(chunk))
            )
            request.finished_future.result(timeout=60)
            data = b"".join(chunks)
        answer = f"ok, {len(data)} bytes"
    except BaseException as exc:
        answer = describe(exc)
    if calls:
        answer += f"; credential callback called {len(calls)} time(s)"
    print(json.dumps(answer))


def questions(args: argparse.Namespace) -> None:
    build("small")
    tls = make_tls(WORK / "tls")
    log = WORK / "questions-access.log"
    log.unlink(missing_ok=True)
    server, endpoints = start_nginx(tls, log)
    proxy = Proxy()
    authed = proxy.url.replace("http://", "http://user:pass%40word@")
    ca = str(tls.ca)
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    asked: list[tuple[str, str, dict[str, str], list[str]]] = []
    for engine in ("obstore", "awscrt"):
        https, http = endpoints["https"], endpoints["http"]
        asked += [
            (f"{engine} https, CA given by its option", f"{engine}-ca-option", {}, [https]),
            (f"{engine} https, SSL_CERT_FILE=ca.pem", f"{engine}-ca-env",
             {"SSL_CERT_FILE": ca}, [https]),
            (f"{engine} https, SSL_CERT_DIR=dir of ca.pem (hashed)", f"{engine}-ca-env",
             {"SSL_CERT_DIR": str(WORK / "certdir")}, [https]),
            (f"{engine} https, AWS_CA_BUNDLE=ca.pem", f"{engine}-ca-env",
             {"AWS_CA_BUNDLE": ca}, [https]),
            (f"{engine} https, no CA given", f"{engine}-ca-none", {}, [https]),
        ]  # fmt: skip
        if engine == "obstore":
            asked += [
                ("obstore https via proxy_url (CONNECT?)", "obstore-ca-option", {},
                 [https, "--proxy", authed]),
                ("obstore http via proxy_url", "obstore-plain", {}, [http, "--proxy", authed]),
                ("obstore https, HTTPS_PROXY set, no proxy_url", "obstore-ca-option",
                 {"HTTPS_PROXY": authed}, [https]),
            ]  # fmt: skip
        else:
            asked += [
                ("awscrt https, HTTPS_PROXY set", "awscrt-ca-option", {"HTTPS_PROXY": authed},
                 [https]),
                ("awscrt http, HTTP_PROXY set", "awscrt-plain", {"HTTP_PROXY": authed}, [http]),
            ]  # fmt: skip
        for error in S3_ERRORS:
            asked.append(
                (f"{engine} {error}, retries off", f"{engine}-plain", {}, [http, "--error", error])
            )
        asked += [
            (f"{engine} slowdown, retries on (3, short backoff)", f"{engine}-retries-default",
             {}, [http, "--error", "slowdown"]),
            (f"{engine} credentials from a callback", f"{engine}-credentials", {}, [http]),
        ]  # fmt: skip
    certdir = WORK / "certdir"
    certdir.mkdir(exist_ok=True)
    shutil.copy(ca, certdir / "ca.pem")
    subprocess.run(["openssl", "rehash", str(certdir)], capture_output=True)
    try:
        for title, question, env, extra in asked:
            mark, seen = log.stat().st_size if log.exists() else 0, len(proxy.seen)
            command = [sys.executable, str(Path(__file__).resolve()), "--ask", question]
            command += ["--endpoint", extra[0], *extra[1:]]
            if "ca-option" in question:
                command += ["--ca", ca]
            out = subprocess.run(
                command, env=base | env, capture_output=True, text=True, timeout=120
            )
            answer = json.loads(out.stdout) if out.stdout.strip() else out.stderr[-500:]
            time.sleep(0.2)  # nginx's log is written as it goes
            with log.open() as lines:
                lines.seek(mark)
                requests = [" ".join(line.split()[:3]) for line in lines]
            auth = ""
            if "credentials" in question:
                with log.open() as lines:
                    lines.seek(mark)
                    auth = "; Authorization: " + " | ".join(
                        line.split('"')[1][:60] for line in lines
                    )
            print(f"- **{title}**: {answer}")
            print(f"  - nginx saw {len(requests)}: {', '.join(requests[:6])}{auth}")
            if len(proxy.seen) > seen:
                print(f"  - proxy saw: {', '.join(proxy.seen[seen:])}")
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated, of {', '.join(ENGINES)}; ENGINE@N: N in flight (small)",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="small,large")
    parser.add_argument("--links", default=",".join(LINKS), help="http,https")
    parser.add_argument("--repeat", type=int, default=3, help="clean runs wanted per cell")
    parser.add_argument("--rounds", type=int, default=6, help="rounds at most")
    parser.add_argument(
        "--clean",
        type=float,
        default=0.10,
        help="a run is clean if others used at most this share of the CPUs meanwhile",
    )
    parser.add_argument("--out", help="also write the report here")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.10,
        help="before each run, wait for a second with the CPUs at most this busy (0-1)",
    )
    parser.add_argument(
        "--patience", type=float, default=60, help="seconds to wait for that, then run anyway"
    )
    parser.add_argument(
        "--questions", action="store_true", help="try obstore's and awscrt's options"
    )
    # Internal: one measured process, or one question.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ask", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    parser.add_argument("--error", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    elif args.ask:
        ask(args)
    elif args.questions:
        questions(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
