"""The one retry policy, and the one concurrency limit throttling acts on.

Every request that may be tried again (planning reads, whole files, ranged
parts) goes through `Retry.run`; nothing retries around it, so tries never
multiply. A request is retried while it fails in a way that may pass (a lost
connection, a 5xx, throttling, bytes that do not match their SHA-1) and its
time is not up (`seconds`, --retry-time): exponential back-off with full
jitter, at least what S3's `Retry-After` asks. Every failure that may pass
is also news for the run's one limit on requests in flight (`concurrency`):
throttling is S3 saying the run as a whole is too fast.
"""

import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from ..errors import Mismatch, Throttled, Transient
from ..network.s3errors import one_line
from .concurrency import Concurrency

T = TypeVar("T")
RETRY_TIME = 120.0  # seconds one request keeps trying, by default
BACKOFF = (0.1, 10.0)  # first and longest back-off, seconds


class RetryListener(Protocol):
    def retrying(self, where: str, error: str, tries: int, elapsed: float) -> None: ...

    def waiting(self, message: str) -> None:
        """Nothing has answered for a while: `message` says what the run waits for."""


class Retry:
    """The policy, shared by a whole run so that it counts every retry once."""

    def __init__(
        self,
        concurrency: Concurrency,
        listener: RetryListener | None = None,
        seconds: float = RETRY_TIME,
    ) -> None:
        self.concurrency, self.listener, self.seconds = concurrency, listener, seconds
        self.retries = 0

    async def run(self, attempt: Callable[[], Awaitable[T]], where: str) -> T:
        """`attempt()` until it succeeds, fails for good, or its time is up; the last
        error then says how long it was tried."""
        start, tries = time.monotonic(), 0
        while True:
            tries += 1
            try:
                result = await attempt()
            except Transient as exc:
                elapsed = time.monotonic() - start
                delay = backoff(tries)
                if isinstance(exc, Throttled):
                    self.concurrency.throttled()
                    delay = max(delay, exc.retry_after or 0.0)
                elif not isinstance(exc, Mismatch):
                    self.concurrency.failed()
                if elapsed + delay > self.seconds or (
                    isinstance(exc, Mismatch) and tries >= Mismatch.TRIES
                ):
                    raise type(exc)(
                        f"{one_line(exc)} (gave up after {elapsed:.1f} s and {tries} tries)"
                    ) from None
                self.record(where, one_line(exc), tries, elapsed)
                await anyio.sleep(delay)
            else:
                return result

    def record(self, where: str, error: str, tries: int, elapsed: float) -> None:
        """Count a retry and tell the listener; also for a whole file started over."""
        self.retries += 1
        if self.listener is not None:
            self.listener.retrying(where, error, tries, elapsed)


def backoff(tries: int) -> float:
    """Exponential back-off with full jitter, so retrying clients do not move in step."""
    first, longest = BACKOFF
    return random.uniform(0, min(longest, first * 2**tries))
