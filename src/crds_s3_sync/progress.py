"""What a person (or a CI log) sees while a sync runs.

The transfer stage reports events to a `Progress`; which one is used depends on
where output goes: a live rich dashboard on a terminal, a plain line every few
seconds otherwise, JSON lines with --log-format json, nothing with --quiet.
All of them write to stderr so that stdout stays clean for --json.
"""

import json
import time
from typing import TYPE_CHECKING, TextIO

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

if TYPE_CHECKING:
    from .plans import FileSpec


class Progress:
    """Counts events; subclasses decide how to show them. This base shows nothing."""

    def __init__(self) -> None:
        self.files = self.bytes = 0
        self.done_files = self.done_bytes = 0
        self.skipped = self.retried = self.failed = 0
        self.in_flight: dict[str, int] = {}  # name -> bytes received
        self.retry_lines: _Retries | None = None  # set by views that print for people

    def planned(self, files: int, total_bytes: int) -> None:
        self.files, self.bytes = files, total_bytes

    def started(self, spec: "FileSpec") -> None:
        self.in_flight[spec.name] = 0

    def advanced(self, spec: "FileSpec", nbytes: int) -> None:
        self.in_flight[spec.name] = self.in_flight.get(spec.name, 0) + nbytes
        self.done_bytes += nbytes

    def restart(self, spec: "FileSpec") -> None:
        """An attempt at the file failed: take back the bytes it had counted."""
        self.done_bytes -= self.in_flight.get(spec.name, 0)
        self.in_flight[spec.name] = 0

    def retrying(self, where: str, error: str, tries: int, elapsed: float) -> None:
        """A request failed in a way that may pass and will be tried again (the
        retry policy's listener)."""
        self.retried += 1
        if self.retry_lines is not None:
            self.retry_lines.show(where, error, tries, elapsed)

    def note(self, message: str) -> None:
        """What the run is doing before there are files to count (planning)."""

    def waiting(self, message: str) -> None:
        """Nothing has answered for a read timeout: what the run waits for."""
        self.note(message)

    def finished(self, spec: "FileSpec", outcome: str, size: int = 0) -> None:
        got = self.in_flight.pop(spec.name, 0)
        self.done_files += 1
        if outcome == "skipped":
            self.skipped += 1
            self.done_bytes += size
        elif outcome == "failed":
            self.failed += 1
            self.done_bytes -= got
        self.refresh()

    def refresh(self) -> None:
        """Called after each file; cheap subclasses can rate-limit here."""

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class _Retries:
    """Retry lines for people: the first at once, then at most one every `interval`
    seconds, so a long run of retries is never silent and never floods."""

    def __init__(self, console: Console, interval: float) -> None:
        self.console, self.interval, self.last = console, interval, -interval

    def show(self, where: str, error: str, tries: int, elapsed: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.console.print(
                f"retrying ({tries} tries, {elapsed:.0f} s so far): {error}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


class PlainProgress(Progress):
    """One line at most every `interval` seconds, for CI logs and pipes."""

    def __init__(self, console: Console, interval: float = 5.0) -> None:
        super().__init__()
        self.console, self.interval = console, interval
        self.start = self.last = time.monotonic()
        self.retry_lines = _Retries(console, interval)

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval or self.done_files == self.files:
            self.last = now
            rate = self.done_bytes / max(now - self.start, 1e-9)
            self.console.print(
                f"{self.done_files}/{self.files} files, {decimal(self.done_bytes)}/"
                f"{decimal(self.bytes)}, {decimal(int(rate))}/s, skipped {self.skipped}, "
                f"retried {self.retried}, failed {self.failed}",
                highlight=False,
                soft_wrap=True,
            )


class Dashboard(Progress):
    """A live rich view: totals with rate and ETA, the files in flight, the counts."""

    SHOWN_IN_FLIGHT = 8

    def __init__(self, console: Console) -> None:
        super().__init__()
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
        self.retry_lines = _Retries(console, 10.0)  # printed above the live view

    def planned(self, files: int, total_bytes: int) -> None:
        super().planned(files, total_bytes)
        self.bars.update(self.bytes_task, total=total_bytes, description=f"{files} files")

    def note(self, message: str) -> None:
        self.live.console.print(message, highlight=False, markup=False)  # above the view

    def refresh(self) -> None:
        self.bars.update(self.bytes_task, completed=max(self.done_bytes, 0))

    def advanced(self, spec: "FileSpec", nbytes: int) -> None:
        super().advanced(spec, nbytes)
        self.bars.update(self.bytes_task, completed=max(self.done_bytes, 0))

    def _render(self) -> Group:
        counts = (
            f"[bold]{self.done_files}[/]/{self.files} files   "
            f"[green]skipped {self.skipped}[/]   [yellow]retried {self.retried}[/]   "
            f"[red]failed {self.failed}[/]"
        )
        flight = Table.grid(padding=(0, 2))
        for name, got in list(self.in_flight.items())[: self.SHOWN_IN_FLIGHT]:
            flight.add_row(f"[dim]↓[/] {name}", decimal(got))
        more = len(self.in_flight) - self.SHOWN_IN_FLIGHT
        if more > 0:
            flight.add_row(f"[dim]… and {more} more in flight[/]", "")
        return Group(self.bars.get_renderable(), counts, flight)

    def __enter__(self) -> "Progress":
        self.live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.live.stop()


class JsonLines(Progress):
    """One JSON object per event, for CI systems that parse logs (`--log-format json`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, event: str, **fields: object) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def planned(self, files: int, total_bytes: int) -> None:
        super().planned(files, total_bytes)
        self.emit("planned", files=files, bytes=total_bytes)

    def note(self, message: str) -> None:
        self.emit("note", message=message)

    def waiting(self, message: str) -> None:
        self.emit("waiting", message=message)

    def retrying(self, where: str, error: str, tries: int, elapsed: float) -> None:
        super().retrying(where, error, tries, elapsed)
        self.emit("retry", where=where, error=error, tries=tries, seconds=round(elapsed, 3))

    def finished(self, spec: "FileSpec", outcome: str, size: int = 0) -> None:
        super().finished(spec, outcome, size)
        self.emit(outcome, name=spec.name, path=str(spec.path), size=spec.size)


def make_progress(
    console: Console, quiet: bool, log_format: str = "text", stdout_is_terminal: bool = True
) -> Progress:
    """Quiet wins; then JSON lines if asked; a dashboard only when both stdout and
    `console` (stderr) are terminals, so `| tee log` or `> out.json` gets plain lines."""
    if quiet:
        return Progress()
    if log_format == "json":
        return JsonLines(console.file)
    if console.is_terminal and stdout_is_terminal:
        return Dashboard(console)
    return PlainProgress(console)
