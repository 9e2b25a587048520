"""The run's one pacer: how many requests are in flight, how many parts of a big
file at once, when to send a request again and how long to wait first.

Modelled on rclone's `lib/pacer`: every request of a run, planning's reads, whole
files and ranged parts alike, is sent inside `request` (one slot of the run's
window, found by measuring: `window`) and tried inside `retry` (the one retry
policy), so no request is retried in two places and every retry, resend and
SlowDown is counted once, in the ledger. A request is tried again while it
fails in a way that may pass (a lost connection, a 5xx, throttling, bytes that
do not match their SHA-1) and its time is not up (--retry-time): exponential
back-off with full jitter, at least what S3's `Retry-After` asks. A `Resend`
(the network layer learned the bucket's region, renewed credentials, or found
a kept-alive connection closed) goes again at once and is no try. Throttling
halves the window, other passing failures take a quarter off: S3's SlowDown is
the run as a whole going too fast. A connection refused, or a host name that does
not resolve, before the source has answered anything is a mistake in the
endpoint or proxy, not a passing fault: the run ends after UNREACHABLE_TRIES.

The pacer also watches for silence: while requests are out and none has been
answered for a read timeout, the ledger hears what the run waits for.
"""

import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

import anyio

from ..errors import Mismatch, Resend, SetupError, Throttled, Transient, Unreachable
from ..network.s3errors import one_line
from .ledger import Ledger, Resent
from .window import Concurrency

T = TypeVar("T")
RETRY_TIME = 120.0  # seconds one request keeps trying, by default
BACKOFF = (0.1, 10.0)  # first and longest back-off, seconds
RESENDS = 4  # a request sent again at once (region, credentials, stale connection), at most
UNREACHABLE_TRIES = 3  # tries of a request while the source has never answered


class Sent:
    """A request in flight: what it brought, for the window to learn from."""

    __slots__ = ("bytes",)

    def __init__(self, nbytes: int) -> None:
        self.bytes = nbytes


class Pacer:
    """One per run; `window.ceiling` is `--jobs`. Use as `async with Pacer(...) as pacer`,
    which watches for silence while it is open."""

    def __init__(
        self, ceiling: int, ledger: Ledger, retry_time: float = RETRY_TIME, timeout: float = 30.0
    ) -> None:
        self.window = Concurrency(ceiling)
        self.ledger, self.retry_time, self.timeout = ledger, retry_time, timeout
        self._pending: dict[int, tuple[str, float]] = {}  # requests out: where, since when
        self._tokens = itertools.count()
        self._last_answer = time.monotonic()
        self.answered = False  # whether the source has answered any request of the run
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> "Pacer":
        watching = await self._stack.enter_async_context(anyio.create_task_group())
        watching.start_soon(self._watch)
        self._stack.callback(watching.cancel_scope.cancel)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def call(self, where: str, attempt: Callable[[], Awaitable[T]], nbytes: int = 0) -> T:
        """One request, in a slot of the window and tried by the retry policy: for
        requests whose answer is all there is to them (planning's reads, HEADs,
        listings); a body bigger than `nbytes` counts as what it brought."""

        async def once() -> T:
            async with self.request(where, nbytes) as sent:
                result = await attempt()
                if isinstance(result, bytes | memoryview):
                    sent.bytes = len(result)
            return result

        return await self.retry(where, once)

    @asynccontextmanager
    async def request(self, where: str, nbytes: int = 0) -> AsyncIterator[Sent]:
        """Hold one slot of the run's window while a request is out; the window learns
        from how it went (`Sent.bytes`: what it brought, if not `nbytes`)."""
        async with self.window.slots:
            token = next(self._tokens)
            self._pending[token] = (where, time.monotonic())
            sent = Sent(nbytes)
            reached = True
            try:
                yield sent
            except Unreachable:
                reached = False
                self.window.failed()
                raise
            except Throttled:
                self.window.throttled()
                raise
            except (Resend, Mismatch):
                raise
            except Transient:
                self.window.failed()
                raise
            else:
                self.window.done(sent.bytes)
            finally:
                del self._pending[token]
                self._last_answer = time.monotonic()
                self.answered = self.answered or reached

    async def retry(self, where: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds, fails for good, or its time is up; the last
        error then says how long it was tried."""
        start, tries, resends = time.monotonic(), 0, 0
        while True:
            tries += 1
            try:
                return await attempt()
            except Resend as exc:
                resends += 1
                tries -= 1
                if resends > RESENDS:
                    raise Transient(f"{where}: S3 kept turning the request away") from None
                self.ledger.record(Resent(where, one_line(exc)))
                continue
            except Transient as exc:
                elapsed = time.monotonic() - start
                if (
                    isinstance(exc, Unreachable)
                    and not self.answered
                    and tries >= UNREACHABLE_TRIES
                ):
                    raise SetupError(
                        f"cannot reach {exc.endpoint}: {exc.cause} ({tries} tries); check "
                        "the endpoint URL, the proxy settings and the network"
                    ) from None
                delay = backoff(tries)
                if isinstance(exc, Throttled):
                    delay = max(delay, exc.retry_after or 0.0)
                if elapsed + delay > self.retry_time or (
                    isinstance(exc, Mismatch) and tries >= Mismatch.TRIES
                ):
                    raise type(exc)(
                        f"{one_line(exc)} (gave up after {elapsed:.1f} s and {tries} tries)"
                    ) from None
                self.ledger.retrying(where, one_line(exc), tries, elapsed)
                await anyio.sleep(delay)

    def parts(self, ceiling: int, start: int) -> Concurrency:
        """The window of one big file's parts in flight: found per file by the same
        climb as the run's, from `start` up to `ceiling`."""
        return Concurrency(ceiling, start=start)

    async def _watch(self) -> None:
        """While requests are out and none has been answered for a read timeout (30 s
        at most), say so, once per such stretch; retry lines say the rest."""
        interval = min(self.timeout, 30.0)
        said = 0.0
        while True:
            await anyio.sleep(interval / 4)
            now = time.monotonic()
            if self._pending and now - max(self._last_answer, said) >= interval:
                where, since = min(self._pending.values(), key=lambda item: item[1])
                self.ledger.waiting(
                    f"no answer for {now - self._last_answer:.0f} s: waiting for "
                    f"{len(self._pending)} requests, the oldest {where} ({now - since:.0f} s)"
                )
                said = now


def backoff(tries: int) -> float:
    """Exponential back-off with full jitter, so retrying clients do not move in step."""
    first, longest = BACKOFF
    return random.uniform(0, min(longest, first * 2**tries))
