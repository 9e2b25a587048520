"""A large download in progress, kept across runs so a killed sync resumes.

Beside the final path live `.NAME.part` (the file, written at part offsets) and
`.NAME.part.json` (which parts are complete, for which size, SHA-1 and part
size). A later run that wants the same file with the same size and SHA-1
fetches only the missing parts, in the part size the record names (whatever
its own); anything else starts afresh. The whole
file is hashed again before it is renamed into place, so a stale or damaged
record can cost a download but never put a wrong file under the final name.

Where another process may fetch the same file at the same time (no lock, or only
a shared one: `locks`), the parts go to a private temporary name instead and are
not kept: two runs writing one `.NAME.part` could each overwrite the other's
parts after hashing their own.
"""

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .durable import atomic_write, settle
from .workfiles import temporary_name

# Seconds between saves of the record while parts arrive: saving after every part
# (256 times for 2 GiB) cost seconds of renames; a killed run loses at most this much.
RECORD_EVERY = 1.0


@dataclass
class PartialFile:
    final: Path
    size: int
    sha1: str | None
    part_size: int
    done: set[int]
    fd: int
    temp: Path
    private: bool = False  # another process may fetch it too: not kept, not resumed
    _buffer: bytearray | None = None
    _saved: float = 0.0  # when the record was last due

    @property
    def record(self) -> Path:
        return _record(self.final)

    @property
    def count(self) -> int:
        return _part_count(self.size, self.part_size)

    @classmethod
    def open(
        cls, final: Path, size: int, sha1: str | None, part_size: int, private: bool = False
    ) -> "PartialFile":
        """Resume what a record describes, or start afresh with `part_size`."""
        if private:
            temp = Path(temporary_name(final))
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            os.ftruncate(fd, size)
            return cls(final, size, sha1, part_size, set(), fd, temp, private=True)
        part_size, done = _completed_parts(final, size, sha1) or (part_size, set())
        if not done:
            # Whatever was there is not ours to trust: a new file, not the old one cut
            # to nothing, which ext4 (auto_da_alloc) would write to the disk on close,
            # 2 GiB waited for even with --no-fsync.
            discard_parts(final)
        try:
            fd = os.open(_temp(final), os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's, not writable by us: start afresh
            discard_parts(final)
            done = set()
            fd = os.open(_temp(final), os.O_RDWR | os.O_CREAT, 0o666)
        if not done:
            os.ftruncate(fd, size)
        return cls(final, size, sha1, part_size, done, fd, _temp(final))

    def part_length(self, index: int) -> int:
        return min(self.part_size, self.size - index * self.part_size)

    def mark_done(self, index: int) -> bool:
        """Part `index` is written; returns whether the record is due to be saved."""
        self.done.add(index)
        now = time.monotonic()
        if self.private or now - self._saved < RECORD_EVERY:
            return False
        self._saved = now
        return True

    def save(self) -> None:
        """Record the parts done so far (not flushed: the whole file is hashed before it
        is used). Blocking: call it off the event loop."""
        record = {
            "size": self.size,
            "sha1": self.sha1,
            "part_size": self.part_size,
            "done": sorted(self.done),
        }
        atomic_write(self.record, json.dumps(record).encode(), durable=False)

    def hash_part(self, index: int, digest: "hashlib._Hash") -> None:
        """Feed part `index`, done by an earlier run, to `digest`, read back.

        One buffer serves every such part (the cursor hashes one part at a time):
        a fresh 8 MiB bytes object per part would cost thousands of page faults.
        """
        if self._buffer is None:
            self._buffer = bytearray(self.part_size)
        view = memoryview(self._buffer)[: self.part_length(index)]
        offset, filled = index * self.part_size, 0
        while filled < len(view):
            got = _read_into(self.fd, view[filled:], offset + filled)
            if got == 0:
                raise OSError(f"{self.temp}: shorter than part {index} needs")
            filled += got
        digest.update(view)

    def finish(self, durable: bool) -> None:
        """The whole file is verified: move it into place (flushed first, if
        `durable`) and forget the record. Blocking: a 2 GiB flush takes a while."""
        settle(self.fd, self.temp, self.final, durable)
        if not self.private:
            self.record.unlink(missing_ok=True)

    def discard(self) -> None:
        os.close(self.fd)
        if self.private:
            self.temp.unlink(missing_ok=True)
        else:
            discard_parts(self.final)

    def close(self) -> None:
        """Stop for now; the parts and their record stay for the next run (private
        ones, which no run could resume, go)."""
        if self.private:
            self.discard()
        else:
            os.close(self.fd)
            with contextlib.suppress(OSError):  # keeping the record is a favour, not a duty
                self.save()


def discard_parts(final: Path) -> None:
    """Remove what an earlier run kept of `final` (only under its lock)."""
    _temp(final).unlink(missing_ok=True)
    _record(final).unlink(missing_ok=True)


def _part_count(size: int, part_size: int) -> int:
    return -(-size // part_size)


def _temp(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def _record(final: Path) -> Path:
    return final.with_name(f".{final.name}.part.json")


def _completed_parts(final: Path, size: int, sha1: str | None) -> tuple[int, set[int]] | None:
    """The part size and completed parts a record holds for this size and SHA-1."""
    try:
        record = json.loads(_record(final).read_text())
        part_size = record["part_size"]
        if (record["size"], record["sha1"]) != (size, sha1) or not isinstance(part_size, int):
            return None
        if part_size <= 0 or _temp(final).stat().st_size != size:
            return None
        count = _part_count(size, part_size)
        done = {i for i in record["done"] if isinstance(i, int) and 0 <= i < count}
        return (part_size, done) if done else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """`os.preadv` into `view`, or `os.pread` and a copy where it is missing (some
    macOS Pythons)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)
