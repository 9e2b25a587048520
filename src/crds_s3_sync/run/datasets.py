"""Best references for given datasets (--datasets): what crds itself answers.

The headers are read before any request, so a file crds cannot read, or one of
another observatory, ends the run before anything is fetched. The answers are
computed once planning has read the contexts' rules: crds runs in worker processes
(`datasets.crds_side`) on a private cache holding exactly the rules this run read
and verified (the bytes it then places in the cache), so every action (sync, a dry
run, check, key) asks crds the same way and a refused run leaves the cache as it
was. A file crds wants beyond the rules (JWST's SYSTEM CRDSCFG) is fetched into
that cache and crds is asked again; it joins the plan with the references chosen.
"""

import asyncio
import tempfile
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from ..cache.crds_config import crds_environment, write_cache_config
from ..datasets import crds_side
from ..datasets.crds_side import NOT_APPLICABLE, OBSERVATORIES, Answer, Header
from ..engine.ledger import Ledger
from ..engine.paced import Paced
from ..errors import FormatError, SyncError
from ..network.s3errors import one_line
from ..pool import Processes, cores
from ..rules.layout import Kind, Layout, relative_path
from ..rules.plans import SERVER_CONFIG, FileSpec
from ..rules.server_config import FileMeta
from .planning import Planning
from .reads import LIMITS
from .upkeep import counted

T = TypeVar("T")

ROUNDS = 3  # crds asked again after fetching what it wanted: CRDSCFG, then nothing
CHUNKS_PER_WORKER = 4  # each worker's share in a few calls, so none waits long for the other


@dataclass(frozen=True)
class Choice:
    """A dataset's best references under one context: {type: file name, "n/a", or
    crds's "NOT FOUND ..." for the type}, or crds's error for the whole dataset."""

    dataset: str
    context: str
    references: dict[str, str] | str

    def files(self) -> list[str]:
        """The references chosen."""
        if isinstance(self.references, str):
            return []
        return [name for name in self.references.values() if _is_file(name)]

    def unresolved(self) -> list[tuple[str, str]]:
        """(type, error) for each type crds found no file for that should have one."""
        if isinstance(self.references, str):
            return [("*", self.references)]
        return [
            (kind, name)
            for kind, name in self.references.items()
            if not _is_file(name) and name != NOT_APPLICABLE
        ]

    def as_json(self) -> dict[str, str] | str:
        if isinstance(self.references, str):
            return self.references
        return {k: "n/a" if v == NOT_APPLICABLE else v for k, v in self.references.items()}


class BestRefs:
    """crds's worker processes for one run, the private cache they read, and the
    datasets' headers. Used as `async with BestRefs(...) as bestrefs:`."""

    def __init__(self, datasets: tuple[Path, ...], observatory: str, ledger: Ledger) -> None:
        self.datasets = [str(path) for path in datasets]
        self.observatory = observatory
        self.ledger = ledger
        self._home = tempfile.TemporaryDirectory(prefix="crds-s3-sync-rules-")
        self.home = Path(self._home.name)
        self.env = {
            **crds_environment(self.home, observatory, Layout.flat),
            "CRDS_READONLY_CACHE": "1",
        }
        workers = min(cores(), len(self.datasets))
        self._pool = Processes([crds_side.__name__], workers)
        self._chunks = workers * CHUNKS_PER_WORKER
        self._headers: list[tuple[str, Header]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.close()
        self._home.cleanup()

    async def read_headers(self) -> None:
        """Every dataset's header, by crds; a file it cannot read, or one of another
        observatory, is a mistake in what the run was given (SyncError)."""
        parts = await self._each(self.datasets, crds_side.read_headers, self.observatory, self.env)
        no_cal_ver = []
        for path, found, header, cal_ver, error in (read for part in parts for read in part):
            if error is not None:
                raise SyncError(f"{path}: crds cannot read this dataset's header: {error}")
            if found != self.observatory or header is None:
                hint = f"give --observatory {found}" if found in OBSERVATORIES else "not CRDS's"
                raise SyncError(
                    f"{path}: a {found} dataset, but this run is for {self.observatory} ({hint})"
                )
            if cal_ver is None and self.observatory == "jwst":
                no_cal_ver.append(path)
            self._headers.append((path, header))
        if no_cal_ver:
            self.ledger.note(
                f"{counted(no_cal_ver, 'dataset')} without CAL_VER (such as {no_cal_ver[0]}):"
                " asked for every reference type of their instruments, as crds does without"
                " the jwst package; no SYSTEM CRDSCFG pipeline configuration was used"
            )

    async def choose(
        self, planning: Planning, paced: Paced
    ) -> tuple[list[Choice], list[FileSpec], dict[str, bytes]]:
        """crds's answers under the planned contexts, the plan they make (the rules and
        the references chosen) and the bytes of files fetched for crds on the way."""
        walked, config = planning.walked, planning.server_config
        assert walked is not None and config is not None, "planned with datasets: read afresh"
        if walked.pickles:
            raise SyncError(
                "--datasets needs the contexts' mapping files, and this source has context"
                " pickles only"
            )
        self._write_rules(planning.config_bytes, walked.mapping_bytes, config.bad_files)
        needed = planning.plan.needed
        references = {spec.name: spec for spec in needed if spec.kind is Kind.reference}
        fetched: dict[str, bytes] = {}
        contexts = planning.plan.contexts
        for round_ in range(ROUNDS):
            answers, asked = await self._recommend(contexts)
            if not asked:
                break
            if round_ == ROUNDS - 1 or set(asked) <= set(fetched):
                raise SyncError(f"crds still asks for {', '.join(asked)}, fetched for it")
            for name in set(asked) - set(fetched):
                fetched[name] = await self._fetch_for_crds(paced, references, name)
        choices = [Choice(*answer) for answer in answers]
        chosen = set(fetched).union(*(choice.files() for choice in choices))
        if unknown := sorted(chosen - set(references)):  # crds reads only the rules given
            raise SyncError(f"crds chose {', '.join(unknown)}, which the contexts do not name")
        plan = [spec for spec in needed if spec.kind is not Kind.reference or spec.name in chosen]
        self.ledger.note(
            f"{counted(choices, 'answer')} from crds: {counted(chosen, 'reference')} chosen"
        )
        return choices, plan, fetched

    def _write_rules(
        self, config_bytes: bytes, mappings: dict[str, bytes], bad_files: list[str]
    ) -> None:
        """The private cache crds reads: server_config, the mappings, its config."""
        self._place(Kind.config, SERVER_CONFIG, config_bytes)
        write_cache_config(self.home, self.observatory, Layout.flat, bad_files)
        for name, data in mappings.items():
            self._place(Kind.mapping, name, data)

    def _place(self, kind: Kind, name: str, data: bytes) -> None:
        """A file into the private cache, where crds looks for it; it is thrown away
        with the run, so nothing is flushed."""
        path = self.home / relative_path(kind, name, self.observatory, Layout.flat)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def _recommend(self, contexts: list[str]) -> tuple[list[Answer], list[str]]:
        answers: list[Answer] = []
        asked: set[str] = set()
        for part, wanted in await self._each(
            self._headers, crds_side.recommend, contexts, self.observatory, self.env
        ):
            answers += part
            asked.update(wanted)
        return answers, sorted(asked)

    async def _fetch_for_crds(
        self, paced: Paced, references: dict[str, FileSpec], name: str
    ) -> bytes:
        """A reference crds wants before it can answer, verified, into its cache."""
        spec = references.get(name)
        if spec is None:
            raise SyncError(f"crds asked for {name}, which the contexts do not name")
        data = await paced.read(spec.source, name, spec.size or LIMITS[Kind.mapping])
        if spec.size is not None and FileMeta.of(data) != FileMeta(spec.size, spec.sha1 or ""):
            raise FormatError(f"{spec.source}/{name}: does not match server_config")
        self._place(Kind.reference, name, data)
        return data

    async def _each(self, items: list[Any], work: Callable[..., T], *args: object) -> list[T]:
        """`work(chunk, *args)` over `items` in chunks, on every worker, in order."""
        size = -(-len(items) // self._chunks)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        try:
            return list(
                await asyncio.gather(*(self._pool.run(work, chunk, *args) for chunk in chunks))
            )
        except ImportError as exc:
            raise SyncError(
                f"--datasets needs crds and the data models it reads headers with ({exc}):"
                f" {crds_side.INSTALL}"
            ) from None
        except BrokenProcessPool as exc:  # killed: out of memory, a crash in C
            raise SyncError(
                f"a worker process reading datasets with crds ended: {one_line(exc)}"
            ) from None


def _is_file(answer: str) -> bool:
    """crds answers a type with a file name, or with "NOT FOUND ..." (n/a included)."""
    return not answer.startswith("NOT FOUND")
