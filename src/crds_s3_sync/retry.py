"""The one retry policy, and the one concurrency limit throttling acts on.

Every request that may be tried again (planning reads, whole files, ranged
parts) goes through `Retry.run`; nothing retries around it, so tries never
multiply. A request is retried while it fails in a way that may pass (a lost
connection, a 5xx, throttling, bytes that do not match their SHA-1) and its
time is not up (`seconds`, --retry-time): exponential back-off with full
jitter, at least what S3's `Retry-After` asks. Throttling is S3 saying the run
as a whole is too fast, so it also lowers the run's one limit on requests in
flight (`Pacer`), which successes then raise again step by step (additive
increase, multiplicative decrease), like TCP and the AWS SDKs' adaptive mode.
"""

import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from .errors import Throttled, Transient
from .s3errors import one_line

T = TypeVar("T")
RETRY_TIME = 120.0  # seconds one request keeps trying, by default
BACKOFF = (0.1, 10.0)  # first and longest back-off, seconds


class Mismatch(Transient):
    """The bytes received are not the bytes server_config describes: fetch them again,
    but only a few times (a flipped bit passes; a bucket that disagrees does not)."""

    TRIES = 3


class RetryListener(Protocol):
    def retrying(self, where: str, error: str, tries: int, elapsed: float) -> None: ...


class Pacer:
    """The run's limit on requests in flight, lowered by throttling, raised by success."""

    HALVE_AT_MOST_EVERY = 1.0  # seconds: one storm of SlowDowns halves the limit once

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.slots = anyio.CapacityLimiter(ceiling)
        self._successes = 0
        self._last_cut = -self.HALVE_AT_MOST_EVERY

    def throttled(self) -> None:
        now = time.monotonic()
        if now - self._last_cut >= self.HALVE_AT_MOST_EVERY:
            self._last_cut = now
            self.slots.total_tokens = max(1, int(self.slots.total_tokens) // 2)
            self._successes = 0

    def succeeded(self) -> None:
        limit = int(self.slots.total_tokens)
        if limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= limit:  # about one round trip's worth of requests
            self._successes = 0
            self.slots.total_tokens = limit + 1


class Retry:
    """The policy, shared by a whole run so that it counts every retry once."""

    def __init__(
        self, pacer: Pacer, listener: RetryListener | None = None, seconds: float = RETRY_TIME
    ) -> None:
        self.pacer, self.listener, self.seconds = pacer, listener, seconds
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
                    self.pacer.throttled()
                    delay = max(delay, exc.retry_after or 0.0)
                if elapsed + delay > self.seconds or (
                    isinstance(exc, Mismatch) and tries >= Mismatch.TRIES
                ):
                    raise type(exc)(
                        f"{one_line(exc)} (gave up after {elapsed:.1f} s and {tries} tries)"
                    ) from None
                self.record(where, one_line(exc), tries, elapsed)
                await anyio.sleep(delay)
            else:
                self.pacer.succeeded()
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
