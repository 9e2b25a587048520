"""One run's record: every transfer event, and every count read from it.

Modelled on rclone's accounting: the engine says what happens (files planned,
bytes received, a retry, a file done) once, as an event, to the run's `Ledger`;
the dashboard, the plain progress lines, JSON lines, the summary, `--json` and
the API's result are all views of this one record, and the API's `on_event`
callback receives the same events. No count is kept anywhere else, so none is
counted twice.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..rules.plans import FileSpec

Outcome = Literal["downloaded", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class Planned:
    """The transfer starts: this many files and bytes to look at."""

    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Note:
    """What the run is doing, for a person (planning, a decision it made)."""

    message: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """Nothing has answered for a read timeout: what the run waits for."""

    message: str


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt at a file began."""

    spec: FileSpec


@dataclass(frozen=True, slots=True)
class Received:
    """Bytes of a file arrived (or were found done by an earlier, killed run)."""

    spec: FileSpec
    bytes: int


@dataclass(frozen=True, slots=True)
class Restarted:
    """An attempt at a file failed: the bytes it had received no longer count."""

    spec: FileSpec


@dataclass(frozen=True, slots=True)
class Retrying:
    """A request (or a whole file) failed in a way that may pass and is tried again."""

    where: str
    error: str
    tries: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Resent:
    """A request was sent again at once, after S3 named the bucket's region, after
    credentials were renewed, or over a fresh connection: no try was lost."""

    where: str
    reason: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A file is done: fetched and in place, found valid, or given up on (`error`).
    `size` is its size as the run found it (server_config's, else the object's);
    `resumed` how many of its bytes an earlier, killed run had left done."""

    spec: FileSpec
    outcome: Outcome
    size: int = 0
    error: str = ""
    resumed: int = 0


Event = Planned | Note | Waiting | Started | Received | Restarted | Retrying | Resent | Finished
Listener = Callable[[Event], None]


@dataclass
class Report:
    """A run's counts, as the ledger had them at its end."""

    downloaded: int = 0
    downloaded_bytes: int = 0  # the sizes of the files downloaded, resumed parts included
    skipped: int = 0
    retries: int = 0
    resends: int = 0  # requests sent again at once (a region learned, credentials renewed)
    resumed_bytes: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)

    @property
    def fetched_bytes(self) -> int:
        """Bytes this run brought over the network into the cache."""
        return self.downloaded_bytes - self.resumed_bytes


class Ledger:
    """The record: `record` takes an event, counts it and hands it to every listener."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self.listeners = listeners or []
        self.files = self.bytes = 0  # planned
        self.done_files = self.done_bytes = 0
        self.in_flight: dict[str, int] = {}  # name -> bytes received by its attempt
        self.report = Report()

    def record(self, event: Event) -> None:
        match event:
            case Received(spec, nbytes):
                self.in_flight[spec.name] = self.in_flight.get(spec.name, 0) + nbytes
                self.done_bytes += nbytes
            case Finished():
                self._finished(event)
            case Started(spec):
                self.in_flight[spec.name] = 0
            case Restarted(spec):
                self.done_bytes -= self.in_flight.get(spec.name, 0)
                self.in_flight[spec.name] = 0
            case Retrying():
                self.report.retries += 1
            case Resent():
                self.report.resends += 1
            case Planned(files, nbytes):
                self.files, self.bytes = files, nbytes
        for listener in self.listeners:
            listener(event)

    def _finished(self, event: Finished) -> None:
        spec, report = event.spec, self.report
        received = self.in_flight.pop(spec.name, 0)
        self.done_files += 1
        if event.outcome == "downloaded":
            report.downloaded += 1
            report.downloaded_bytes += event.size
            report.resumed_bytes += event.resumed
            if spec.sha1 is None:
                report.unverified.append(spec.name)
        elif event.outcome == "skipped":
            report.skipped += 1
            self.done_bytes += event.size
        else:
            report.failed.append({"name": spec.name, "error": event.error})
            self.done_bytes -= received

    # -- what the engine says, by name -------------------------------------------------

    def note(self, message: str) -> None:
        self.record(Note(message))

    def waiting(self, message: str) -> None:
        self.record(Waiting(message))

    def retrying(self, where: str, error: str, tries: int, seconds: float) -> None:
        self.record(Retrying(where, error, tries, seconds))
