"""The run's limit on requests in flight: a window that follows measured throughput.

The controller is driven here with a clock the test moves, and a "link" whose
throughput the test decides for each window size: it must climb while that
grows, settle where it stops, give way to throttling and errors, and never pass
the ceiling (--jobs)."""

import asyncio

import anyio
import pytest

from crds_s3_sync.engine.window import (
    CUT_AT_MOST_EVERY,
    HOLD,
    ROUND,
    START,
    Concurrency,
    Window,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_rounds(control: Concurrency, clock: Clock, rate_of, rounds: int) -> list[int]:
    """Complete `rounds` rounds of requests, each 1 MB, at the requests per second
    `rate_of(limit)` says, with the window kept full; the limits seen, per round."""
    seen = []
    for _ in range(rounds):
        limit = control.limit
        control.slots.full = True  # the run always has more work than the window
        per_request = 1 / rate_of(limit)
        for _ in range(max(limit, int(ROUND / per_request) + 1)):
            clock.now += per_request
            control.done(1 << 20)
        seen.append(control.limit)
    return seen


def test_the_window_grows_while_throughput_does_and_settles_where_it_stops() -> None:
    clock = Clock()
    control = Concurrency(1024, clock=clock)
    assert control.limit == START
    # A far link: each request takes 40 ms, so throughput follows the window up to 128
    # in flight; past that the pipe is full.
    seen = run_rounds(control, clock, lambda limit: min(limit, 128) / 0.04, 30)
    assert max(seen) <= 256  # one step past the knee, no more
    assert seen[-1] == 128
    assert 128 in seen[:12]  # found within a dozen rounds


def test_a_fast_link_keeps_the_window_small() -> None:
    clock = Clock()
    control = Concurrency(1024, clock=clock)
    # CPU-bound: the same requests per second whatever the window.
    seen = run_rounds(control, clock, lambda limit: 5000.0, 20)
    assert seen[-1] == START


def test_the_ceiling_is_never_passed() -> None:
    clock = Clock()
    control = Concurrency(48, clock=clock)
    seen = run_rounds(control, clock, lambda limit: limit / 0.04, 30)
    assert max(seen) == 48


def test_a_window_that_is_not_full_teaches_nothing() -> None:
    clock = Clock()
    control = Concurrency(1024, clock=clock)
    for _ in range(1000):  # plenty of completions, but never a full window
        clock.now += 0.001
        control.slots.full = False
        control.done(1 << 20)
    assert control.limit == START


def test_throttling_halves_errors_cut_a_quarter_once_per_storm_and_growth_returns() -> None:
    clock = Clock()
    control = Concurrency(1024, clock=clock)
    run_rounds(control, clock, lambda limit: min(limit, 128) / 0.04, 30)
    assert control.limit == 128
    control.throttled()
    control.throttled()  # the same storm
    assert control.limit == 64
    clock.now += CUT_AT_MOST_EVERY
    control.failed()
    assert control.limit == 48
    seen = run_rounds(control, clock, lambda limit: min(limit, 128) / 0.04, 40)
    assert seen[-1] >= 100  # climbed back toward the knee


def test_a_plateau_is_probed_again_after_a_while() -> None:
    clock = Clock()
    control = Concurrency(1024, clock=clock)
    knee = {"at": 32}
    run_rounds(control, clock, lambda limit: min(limit, knee["at"]) / 0.04, 20)
    assert control.limit == 32
    knee["at"] = 512  # the link got better
    clock.now += HOLD
    seen = run_rounds(control, clock, lambda limit: min(limit, knee["at"]) / 0.04, 60)
    assert seen[-1] > 128


async def test_the_window_admits_up_to_its_limit_and_follows_a_resize() -> None:
    window = Window(2)
    inside, most = 0, 0

    async def request(hold: anyio.Event) -> None:
        nonlocal inside, most
        async with window:
            inside += 1
            most = max(most, inside)
            await hold.wait()
            inside -= 1

    hold = anyio.Event()
    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(request, hold)
        await anyio.wait_all_tasks_blocked()
        assert (inside, window.in_flight) == (2, 2)
        window.resize(4)
        await anyio.wait_all_tasks_blocked()
        assert inside == 4
        hold.set()
    assert most == 4
    assert window.in_flight == 0


async def test_a_cancelled_waiter_gives_back_nothing_it_did_not_take() -> None:
    window = Window(1)
    async with window:
        with anyio.move_on_after(0.05):
            async with window:
                pytest.fail("a second request entered a window of one")
        assert window.in_flight == 1
    assert window.in_flight == 0
    async with window:  # the slot is free again
        assert window.in_flight == 1


async def test_a_waiter_cancelled_before_it_resumes_is_passed_over() -> None:
    window = Window(1)
    await window.__aenter__()  # hold the only slot
    waiter = asyncio.create_task(window.__aenter__())
    await asyncio.sleep(0)  # now waiting for a turn
    waiter.cancel()  # its turn is cancelled at once; the task resumes later
    window.release()  # must not hand the slot to the cancelled turn
    assert window.in_flight == 0
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert window.in_flight == 0
    async with window:
        assert window.in_flight == 1


async def test_weighted_shares_fit_the_limit_and_an_oversized_one_goes_alone() -> None:
    budget = Window(100)  # e.g. bytes of bodies held in memory
    await budget.acquire(60)
    await budget.acquire(40)
    assert budget.in_flight == 100
    waiter = asyncio.create_task(budget.acquire(30))
    await asyncio.sleep(0)
    assert not waiter.done()  # 30 more would pass the limit
    budget.release(40)
    await waiter
    assert budget.in_flight == 90
    budget.release(60)
    budget.release(30)
    big = asyncio.create_task(budget.acquire(250))  # more than the whole limit
    await big  # nothing else held: it gets in
    small = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0)
    assert not small.done()  # ... and alone
    budget.release(250)
    await small
    assert budget.in_flight == 1
