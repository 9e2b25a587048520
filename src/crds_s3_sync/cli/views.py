"""What a person (or a CI log) sees while a sync runs: views of the run's ledger.

Which view depends on where output goes: a live rich dashboard on a terminal, a
plain line every few seconds otherwise, JSON lines with --log-format json,
nothing with --quiet. Each listens to the ledger's events and reads its counts;
none keeps counts of its own. All write to stderr, so stdout stays clean for --json.
"""

import json
import time
from typing import TextIO

from rich.console import Console, Group
from rich.filesize import decimal
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import (
    Progress as RichProgress,
)
from rich.table import Table

from ..engine.ledger import (
    Event,
    Finished,
    Ledger,
    Note,
    Planned,
    Received,
    Resent,
    Retrying,
    Waiting,
)


class View:
    """Shows nothing; subclasses show events as they come. Used as a context manager
    around the transfer, for views that draw while it runs."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        ledger.listeners.append(self)

    def __call__(self, event: Event) -> None:
        pass

    def __enter__(self) -> "View":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class _Lines(View):
    """Notes and retries as lines for people: the first retry at once, then at most
    one every `interval` seconds, so a long run of retries is never silent and never
    floods."""

    def __init__(self, ledger: Ledger, console: Console, interval: float) -> None:
        super().__init__(ledger)
        self.console, self.interval, self._last_retry = console, interval, -interval

    def __call__(self, event: Event) -> None:
        match event:
            case Note(message) | Waiting(message):
                self.console.print(message, highlight=False, markup=False)
            case Retrying(_, error, tries, seconds):
                now = time.monotonic()
                if now - self._last_retry >= self.interval:
                    self._last_retry = now
                    self.console.print(
                        f"retrying ({tries} tries, {seconds:.0f} s so far): {error}",
                        highlight=False,
                        markup=False,
                        soft_wrap=True,
                    )


class PlainLines(_Lines):
    """One progress line at most every `interval` seconds, for CI logs and pipes."""

    def __init__(self, ledger: Ledger, console: Console, interval: float = 5.0) -> None:
        super().__init__(ledger, console, interval)
        self.start = self.last = time.monotonic()

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if not isinstance(event, Finished):
            return
        ledger, now = self.ledger, time.monotonic()
        if now - self.last >= self.interval or ledger.done_files == ledger.files:
            self.last = now
            report = ledger.report
            rate = ledger.done_bytes / max(now - self.start, 1e-9)
            self.console.print(
                f"{ledger.done_files}/{ledger.files} files, {decimal(ledger.done_bytes)}/"
                f"{decimal(ledger.bytes)}, {decimal(int(rate))}/s, skipped {report.skipped}, "
                f"retried {report.retries}, failed {len(report.failed)}",
                highlight=False,
                soft_wrap=True,
            )


class Dashboard(_Lines):
    """A live rich view: totals with rate and ETA, the files in flight, the counts."""

    SHOWN_IN_FLIGHT = 8

    def __init__(self, ledger: Ledger, console: Console) -> None:
        super().__init__(ledger, console, 10.0)
        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.bytes_task: TaskID = self.bars.add_task("bytes", total=None)
        self.live = Live(console=console, get_renderable=self._render, refresh_per_second=8)

    def __call__(self, event: Event) -> None:
        match event:
            case Received() | Finished():
                self.bars.update(self.bytes_task, completed=max(self.ledger.done_bytes, 0))
            case Planned(files, nbytes):
                self.bars.update(self.bytes_task, total=nbytes, description=f"{files} files")
                self.live.start()  # drawn from the transfer on; notes before it are lines
            case _:
                super().__call__(event)  # printed above the live view

    def _render(self) -> Group:
        ledger, report = self.ledger, self.ledger.report
        counts = (
            f"[bold]{ledger.done_files}[/]/{ledger.files} files   "
            f"[green]skipped {report.skipped}[/]   [yellow]retried {report.retries}[/]   "
            f"[red]failed {len(report.failed)}[/]"
        )
        flight = Table.grid(padding=(0, 2))
        in_flight = list(ledger.in_flight.items())
        for name, got in in_flight[: self.SHOWN_IN_FLIGHT]:
            flight.add_row(f"[dim]↓[/] {name}", decimal(got))
        more = len(in_flight) - self.SHOWN_IN_FLIGHT
        if more > 0:
            flight.add_row(f"[dim]… and {more} more in flight[/]", "")
        return Group(self.bars.get_renderable(), counts, flight)

    def __exit__(self, *exc_info: object) -> None:
        self.live.stop()


class JsonLines(View):
    """One JSON object per event (`--log-format json`), for CI systems that parse
    logs; the schema is README's and only ever grows."""

    def __init__(self, ledger: Ledger, stream: TextIO) -> None:
        super().__init__(ledger)
        self.stream = stream

    def __call__(self, event: Event) -> None:
        match event:
            case Planned(files, nbytes):
                self.emit("planned", files=files, bytes=nbytes)
            case Note(message):
                self.emit("note", message=message)
            case Waiting(message):
                self.emit("waiting", message=message)
            case Retrying(where, error, tries, seconds):
                self.emit("retry", where=where, error=error, tries=tries, seconds=round(seconds, 3))
            case Resent(where, reason):
                self.emit("resend", where=where, reason=reason)
            case Finished(spec, outcome, _, error):
                extra = {"error": error} if error else {}
                self.emit(outcome, name=spec.name, path=spec.path, size=spec.size, **extra)

    def emit(self, event: str, **fields: object) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def make_view(
    ledger: Ledger,
    console: Console,
    quiet: bool,
    log_format: str = "text",
    stdout_is_terminal: bool = True,
) -> View:
    """Quiet wins; then JSON lines if asked; a dashboard only when both stdout and
    `console` (stderr) are terminals, so `| tee log` or `> out.json` gets plain lines."""
    if quiet:
        return View(ledger)
    if log_format == "json":
        return JsonLines(ledger, console.file)
    if console.is_terminal and stdout_is_terminal:
        return Dashboard(ledger, console)
    return PlainLines(ledger, console)
