"""The run's one limit on requests in flight, found by measuring, not guessed.

No fixed number suits every link: on loopback a dozen requests in flight keep
the CPU busy and more only add overhead, while 40 ms away it takes a hundred or
more to keep the pipe full. So the window is a hill climb on what the run
achieves, the idea behind AWS's CRT S3 client (which sizes its connections
from a target throughput): it starts at START and doubles each round while
throughput (bytes or requests per second) grows by at least GAIN. When a step
brings nothing it tries halfway back (a binary search between the best size and
the failed one); once steps are finer than FINEST it settles on the best, holds
there for a while, then probes upward again in small steps, since links change. S3's
SlowDown halves it, other transient errors take a quarter off (each at most
once a second, so one storm counts once), and growth starts again from there.

A round is `limit` completions (about one round trip of the whole window) and
at least ROUND seconds, and is measured only if the window was full during it:
a run running out of work says nothing about the link. `--jobs` is the ceiling.
Every request, small or large, planning or transfer, holds one slot. A large
file's parts in flight are found the same way, by a controller of its own
(`ranged`): whether a file is split at all, and how far, is the same question.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

START = 16  # requests in flight at first (or the ceiling, if lower)
GAIN = 0.10  # the least growth in throughput that counts as progress
ROUND = 0.05  # seconds a round lasts at least, so a fast link's rounds are not noise
HOLD = 2.0  # seconds at a plateau before probing upward again
FINEST = 1.2  # the smallest step worth measuring: throughput differs less than noise
PROBE = 1.25  # the step of a probe after a plateau or a cut
CUT_AT_MOST_EVERY = 1.0  # seconds: a storm of errors lowers the window once


class Window:
    """An adjustable semaphore: `limit` can move while requests are in flight.

    Each holder takes a `weight` (1 for a request; bytes, for a memory budget);
    one heavier than the whole limit still gets in when nothing else is held.
    A free share is taken without yielding to the loop: the request that follows
    yields anyway. Waiting is on a bare asyncio future (the sync runs on asyncio,
    uvloop where there is one): an anyio Event costs a look-up of the running
    library each time, a measurable share of a small file's cost."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.full = False  # reached the limit since the controller last looked
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def acquire(self, weight: int = 1) -> None:
        if self._fits(weight) and not self._waiting:
            self._take(weight)
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((weight, turn))
        self.full = True
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # handed its share as it was cancelled
                self.release(weight)
            elif (weight, turn) in self._waiting:
                self._waiting.remove((weight, turn))
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _fits(self, weight: int) -> bool:
        return self.in_flight + weight <= self.limit or self.in_flight == 0

    def _take(self, weight: int) -> None:
        self.in_flight += weight
        if self.in_flight >= self.limit:
            self.full = True

    def release(self, weight: int = 1) -> None:
        self.in_flight -= weight
        self.resize(self.limit)

    def resize(self, limit: int) -> None:
        self.limit = limit
        while self._waiting and self._fits(self._waiting[0][0]):
            weight, turn = self._waiting.popleft()
            if not turn.done():  # else cancelled, its waiter not yet resumed to say so
                self._take(weight)
                turn.set_result(None)


@dataclass
class _Round:
    start: float
    count: int = 0
    bytes: int = 0


class Concurrency:
    """The controller: `slots` is the window every request holds; `done`, `throttled`
    and `failed` are what it learns from."""

    def __init__(
        self, ceiling: int, start: int = START, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ceiling = ceiling
        self.slots = Window(min(start, ceiling))
        self._clock = clock
        self._round = _Round(clock())
        self._settling = False  # the first round after a change shows the old size too
        self._best: tuple[int, float, float] | None = None  # limit, bytes/s, requests/s
        self._step = 2.0  # growth factor: doubling until the first plateau
        self._hold_until = 0.0
        self._last_cut = -CUT_AT_MOST_EVERY

    @property
    def limit(self) -> int:
        return self.slots.limit

    def done(self, size: int) -> None:
        """A request finished well, having brought `size` bytes."""
        current = self._round
        current.count += 1
        current.bytes += size
        now = self._clock()
        if current.count < self.limit or now - current.start < ROUND:
            return
        full, self.slots.full = self.slots.full, self.slots.in_flight >= self.limit
        self._round = _Round(now)
        if not full or self._settling or now < self._hold_until:
            self._settling = False
            return
        elapsed = now - current.start
        self._climb(current.bytes / elapsed, current.count / elapsed)

    def _climb(self, byte_rate: float, request_rate: float) -> None:
        best = self._best
        if best is None or byte_rate > best[1] * (1 + GAIN) or request_rate > best[2] * (1 + GAIN):
            self._best = (self.limit, byte_rate, request_rate)
            if self.limit < self.ceiling:
                self._resize(min(self.ceiling, max(self.limit + 1, int(self.limit * self._step))))
            return
        # No better than the best size so far: try halfway between (geometrically), and
        # once steps are too fine to tell apart, settle on the best, probing later.
        self._step **= 0.5
        between = min(self.ceiling, max(best[0] + 1, int(best[0] * self._step)))
        if self._step >= FINEST and between > best[0]:
            self._resize(between)
            return
        self._resize(best[0])
        self._best = None
        self._step = PROBE
        self._hold_until = self._clock() + HOLD

    def throttled(self) -> None:
        """S3 said SlowDown: the run as a whole is too fast."""
        self._cut(0.5)

    def failed(self) -> None:
        """A request failed in a way that may pass (a lost connection, a 5xx)."""
        self._cut(0.75)

    def _cut(self, factor: float) -> None:
        now = self._clock()
        if now - self._last_cut < CUT_AT_MOST_EVERY:
            return
        self._last_cut = now
        self._resize(max(1, int(self.limit * factor)))
        self._best = None
        self._step = PROBE

    def _resize(self, limit: int) -> None:
        if limit != self.limit:
            self.slots.resize(limit)
            self._settling = True
