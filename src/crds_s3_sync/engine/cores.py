"""One event loop per core: helper processes that fetch shares of the small files.

A small file costs about a quarter of a millisecond of Python (request, SHA-1,
write, rename) however fast the link, so one event loop cannot pass a few
thousand files a second. The command forks its helpers once imports are done and
before any event loop or thread exists, when a fork is safe and costs
milliseconds instead of the half second a fresh interpreter spends importing.
Each helper opens its own S3 source at once (while the main process plans) and
waits. Once the plan is known, `Transfer` hands each helper a share of the
small files still missing; the helper fetches it with a `Transfer` of its own and
sends back, in batches, its progress events and finally its report, which the
main process folds into its own: the person sees one run.

Shares hold only files of at most `IN_MEMORY` bytes, which take no lock (see
`transfer`), so the processes need nothing from each other but the plan. A helper
that loses its main process (its socket closes) cancels its transfers, which
remove their temporary files, and exits; so does one interrupted by Ctrl-C.
Helpers exist only on Linux: macOS's system libraries are not safe to use in a
forked child.
"""

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import AsyncExitStack
from dataclasses import fields, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, NoReturn

import anyio

from ..cache.workfiles import RunFile
from ..errors import SyncError
from ..network.location import Location
from ..network.s3errors import one_line
from ..network.source import S3Source
from ..pool import task_group
from ..rules.layout import Kind
from ..rules.plans import FileSpec
from ..run.settings import Settings
from .ledger import (
    Event,
    Finished,
    Ledger,
    Note,
    Received,
    Restarted,
    Retrying,
    Started,
    Waiting,
)
from .pacer import Pacer
from .platforms import EVENT_LOOP
from .transfer import Transfer, TransferOptions

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

AT_LEAST = 64  # small files per process for a share to be worth sending
MOST = 4  # helpers and main process together, by default: beyond that the link decides
EVENTS_EVERY = 0.05  # seconds between batches of a helper's progress events
REAPED_WITHIN = 5.0  # seconds a helper gets to clean up and exit once dismissed
_LENGTH = struct.Struct("!I")


def default_processes() -> int:
    """One process per core this process may use, at most MOST."""
    return max(1, min(MOST, len(os.sched_getaffinity(0))))


class Helper:
    """The main process's handle on one helper."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock

    async def fetch(self, files: list[FileSpec], settings: Settings, ledger: Ledger) -> None:
        """Have the helper fetch `files`, recording its events in the run's `ledger`."""
        by_name = {spec.name: spec for spec in files}
        reader, writer = await asyncio.open_connection(sock=self.sock)
        try:
            locations = _locations(settings)
            await _send(writer, {"files": [_encode(spec, locations) for spec in files]})
            while True:
                message = await _receive(reader)
                if message is None:
                    raise SyncError(f"helper process {self.pid} stopped before it was done")
                for event in message.get("events", ()):
                    ledger.record(_decode_event(event, by_name))
                if "error" in message:
                    raise SyncError(message["error"])
                if message.get("done"):
                    return
        finally:
            writer.close()

    def close(self) -> None:
        """Dismiss the helper (a closed socket says so) and wait for it to exit;
        one that does not within REAPED_WITHIN is killed."""
        self.sock.close()
        deadline = time.monotonic() + REAPED_WITHIN
        while time.monotonic() < deadline:
            with_status, _ = os.waitpid(self.pid, os.WNOHANG)
            if with_status:
                return
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


class Helpers:
    """The helpers of one run; the main process's `Transfer` hands them shares."""

    def __init__(self, helpers: list[Helper], main_jobs: int, settings: Settings) -> None:
        self.helpers = helpers
        self.settings = settings
        self.main_jobs = main_jobs  # the main process's part of the ceiling, once they help

    @classmethod
    def fork(cls, processes: int, settings: Settings, options: TransferOptions) -> "Helpers":
        """`processes - 1` helpers, or none where forking now would not be safe. Each
        takes an equal part of `options.jobs`, the run's ceiling on requests in flight."""
        processes = min(processes, options.jobs)  # each needs a request slot of its own
        if processes < 2 or not sys.platform.startswith("linux") or threading.active_count() > 1:
            return cls([], options.jobs, settings)
        each = max(1, options.jobs // processes)
        main_jobs = max(1, options.jobs - each * (processes - 1))
        options = replace(options, jobs=each)
        helpers: list[Helper] = []
        for _ in range(processes - 1):
            ours, theirs = socket.socketpair()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                ours.close()
                for sibling in helpers:
                    sibling.sock.close()
                _serve(theirs, settings, options)
            theirs.close()
            helpers.append(Helper(pid, ours))
        return cls(helpers, main_jobs, settings)

    def take(self, files: list[FileSpec], transfer: Transfer, group: "TaskGroup") -> list[FileSpec]:
        """Start the helpers on their shares of `files`; what is left for `transfer`."""
        wanted = [spec for spec in files if transfer.shareable(spec)]
        count = len(self.helpers) + 1
        if len(self.helpers) == 0 or len(wanted) < AT_LEAST * count:
            return files
        shares = [wanted[k::count] for k in range(1, count)]  # the plan is sorted by name
        given = set()
        for helper, share in zip(self.helpers, shares, strict=True):
            given.update(spec.name for spec in share)
            group.start_soon(self._fetch, helper, share, transfer)
        transfer.pacer.window.cap(self.main_jobs)
        return [spec for spec in files if spec.name not in given]

    async def _fetch(self, helper: Helper, share: list[FileSpec], transfer: Transfer) -> None:
        await helper.fetch(share, self.settings, transfer.ledger)

    def close(self) -> None:
        for helper in self.helpers:
            helper.close()


# -- in the helper ---------------------------------------------------------------------


def _serve(sock: socket.socket, settings: Settings, options: TransferOptions) -> NoReturn:
    """The helper's whole life; it never returns into the command's code."""
    code = 0
    for signum in (signal.SIGTERM, signal.SIGHUP):  # the main process ends us, cleanly
        signal.signal(signum, signal.SIG_IGN)
    try:
        anyio.run(_work, sock, settings, options, backend_options=EVENT_LOOP)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # whatever it is, the main process reports a helper that stopped
        code = 3
    finally:
        os._exit(code)


async def _work(sock: socket.socket, settings: Settings, options: TransferOptions) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    relay = _Relay(writer)
    ledger = Ledger([relay])  # its counts are the main process's to keep
    async with AsyncExitStack() as stack:
        try:
            opened = S3Source(settings.endpoint, options.jobs, options.timeout)
            source: S3Source | None = await stack.enter_async_context(opened)
            failure: SyncError | None = None
        except SyncError as exc:  # said only if there is work: the main process may fail alike
            source, failure = None, exc
        message = await _receive(reader)
        if not message:
            return
        try:
            if failure is not None or source is None:
                raise failure or SyncError("no S3 source")
            locations = _locations(settings)
            files = [_decode(item, locations) for item in message["files"]]
            async with task_group() as group:
                group.start_soon(relay.pump)
                group.start_soon(_cancel_on_close, reader, group.cancel_scope)
                pacer = Pacer(options.jobs, ledger, options.retry_time, options.timeout)
                with RunFile(settings.cache):
                    async with pacer:
                        await Transfer(source, pacer, settings.cache, options).run(files)
                group.cancel_scope.cancel()
            relay.flush()
            await _send(writer, {"done": True})
        except SyncError as exc:
            relay.flush()
            await _send(writer, {"error": one_line(exc)})


async def _cancel_on_close(reader: asyncio.StreamReader, scope: anyio.CancelScope) -> None:
    """The main process is gone or gave up: stop, leaving no temporary files."""
    await reader.read()
    scope.cancel()


class _Relay:
    """The helper's ledger listener: events queued and sent in batches every EVENTS_EVERY."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.events: list[list[object]] = []

    def __call__(self, event: Event) -> None:
        self.events.append(_encode_event(event))

    async def pump(self) -> None:
        while True:
            await anyio.sleep(EVENTS_EVERY)
            self.flush()

    def flush(self) -> None:
        if self.events:
            _write(self.writer, {"events": self.events})
            self.events = []


# -- between the two -------------------------------------------------------------------


_EVENTS: dict[str, type] = {
    kind.__name__: kind
    for kind in (Note, Waiting, Started, Received, Restarted, Retrying, Finished)
}


def _encode_event(event: Event) -> list[object]:
    """An event as JSON: its kind, then its fields, a file by its name."""
    values = [getattr(event, f.name) for f in fields(event)]
    if values and isinstance(values[0], FileSpec):
        values[0] = values[0].name
    return [type(event).__name__, *values]


def _decode_event(item: list, by_name: dict[str, FileSpec]) -> Event:
    kind, *values = item
    if values and isinstance(values[0], str) and kind not in ("Note", "Waiting", "Retrying"):
        values[0] = by_name[values[0]]
    return _EVENTS[kind](*values)


def _locations(settings: Settings) -> list[Location]:
    """Where a spec's bytes come from, sent as an index into this list."""
    return [settings.config, settings.mappings, settings.references, settings.pickles]


def _encode(spec: FileSpec, locations: list[Location]) -> list[object]:
    where = locations.index(spec.source)
    return [
        spec.name,
        spec.kind.value,
        spec.size,
        spec.sha1,
        spec.instrument,
        where,
        str(spec.path),
    ]


def _decode(item: list, locations: list[Location]) -> FileSpec:
    name, kind, size, sha1, instrument, where, path = item
    return FileSpec(name, Kind(kind), size, sha1, instrument, locations[where], PurePosixPath(path))


def _write(writer: asyncio.StreamWriter, message: object) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    writer.write(_LENGTH.pack(len(data)) + data)


async def _send(writer: asyncio.StreamWriter, message: object) -> None:
    _write(writer, message)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> dict | None:
    """The next message, or None once the other side has closed."""
    try:
        length = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]
        return json.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None
