"""Download the plan into the cache, verifying every byte on the way.

Each file streams into a hidden temporary file beside its final path while its
SHA-1 is computed; only when size and SHA-1 match `download_metadata` is it
renamed into place (os.replace, atomic on POSIX). So a final path only ever
holds a verified file, and a killed run leaves at most a temporary file that
the next run ignores and overwrites.
"""

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles
import anyio
from botocore.exceptions import BotoCoreError

from .layout import temporary_path
from .plan import FileSpec
from .pool import for_each
from .progress import Progress
from .source import ATTEMPTS, S3Source, SourceError, backoff, is_transient

CHUNK = 1 << 20
HASH_BLOCK = 4 << 20


class ChecksumMismatch(Exception):
    """The bytes received are not the bytes server_config describes."""


@dataclass
class Report:
    downloaded: int = 0
    skipped: int = 0
    retries: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


@dataclass
class Transfer:
    """One sync's transfers: shared client, cache root, options and the running report."""

    source: S3Source
    cache: Path
    progress: Progress
    verify: bool = False
    jobs: int = 16
    prefetched: dict[str, bytes] = field(default_factory=dict)
    report: Report = field(default_factory=Report)

    async def run(self, plan: Iterable[FileSpec]) -> Report:
        await for_each(plan, self._one, self.jobs)
        return self.report

    async def _one(self, spec: FileSpec) -> None:
        final = self.cache / spec.path
        try:
            expected = await self._expected_size(spec)
            if await self._is_valid(final, spec, expected):
                self.report.skipped += 1
                self.progress.finished(spec, "skipped", expected)
                return
            await self._download(spec, final, expected)
        except (SourceError, ChecksumMismatch, OSError, BotoCoreError) as exc:
            self.report.failed.append({"name": spec.name, "error": " ".join(str(exc).split())})
            self.progress.finished(spec, "failed")
            return
        self.report.downloaded += 1
        if spec.sha1 is None:
            self.report.unverified.append(spec.name)
        self.progress.finished(spec, "downloaded")

    async def _expected_size(self, spec: FileSpec) -> int:
        if spec.size is not None:
            return spec.size
        if spec.name in self.prefetched:
            return len(self.prefetched[spec.name])
        return await self.source.size(spec.source, spec.name)

    async def _is_valid(self, final: Path, spec: FileSpec, size: int) -> bool:
        try:
            if final.stat().st_size != size:
                return False
        except FileNotFoundError:
            return False
        if not self.verify or spec.sha1 is None:
            return True
        return await anyio.to_thread.run_sync(sha1_of_file, final) == spec.sha1

    async def _download(self, spec: FileSpec, final: Path, size: int) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, ATTEMPTS + 1):
            temp = temporary_path(final)
            self.progress.started(spec)
            try:
                await self._fetch_to(spec, temp, size)
                os.replace(temp, final)
                return
            except Exception as exc:
                if attempt == ATTEMPTS or not (
                    is_transient(exc) or isinstance(exc, ChecksumMismatch)
                ):
                    raise
                self.report.retries += 1
                self.progress.restarted(spec)
                await anyio.sleep(backoff(attempt))
            finally:
                temp.unlink(missing_ok=True)

    async def _fetch_to(self, spec: FileSpec, temp: Path, size: int) -> None:
        digest = hashlib.sha1()
        received = 0
        async with aiofiles.open(temp, "wb") as out:
            if spec.name in self.prefetched:
                data = self.prefetched[spec.name]
                await out.write(data)
                digest.update(data)
                received = len(data)
                self.progress.advanced(spec, received)
            else:
                async with self.source.open(spec.source, spec.name) as stream:
                    if stream.size != size:  # the bucket disagrees with server_config: no retry
                        raise SourceError(
                            f"{spec.source.key(spec.name)}: object is {stream.size} bytes, "
                            f"server_config says {size}"
                        )
                    while chunk := await stream.body.read(CHUNK):
                        await out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        self.progress.advanced(spec, len(chunk))
        if received != size:
            raise ChecksumMismatch(f"{spec.name}: received {received} bytes, expected {size}")
        if spec.sha1 is not None and digest.hexdigest() != spec.sha1:
            raise ChecksumMismatch(
                f"{spec.name}: SHA-1 {digest.hexdigest()} does not match {spec.sha1}"
            )


def sha1_of_file(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
