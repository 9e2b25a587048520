"""The options of a run, declared once: their names, ranges and which exclude each
other, checked and resolved (with the environment and presets: `settings`) by
`prepare` before any request. The command line and the Python API both hand
what they were given to `prepare`, which names a wrong option as the caller
spells it: `--jobs` on the command line, `jobs=` from Python.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

from ..datasets.files import dataset_files
from ..engine.platforms import check_platform, fit_open_files
from ..engine.transfer import TransferOptions
from ..errors import SyncError
from ..rules.layout import Kind, Layout
from ..rules.names import is_date_context
from ..rules.walker import Selection
from .settings import Env, Settings, resolve_settings
from .stages import Action, SyncOptions

E = TypeVar("E", Env, Layout, Kind)


class Options(TypedDict, total=False):
    """The command's options, by their Python names; all optional."""

    # which contexts (at most one of these; default: CRDS_CONTEXT, else the operational one)
    contexts: Sequence[str]
    last: int
    all: bool
    # only the references these dataset files need (files, or directories searched)
    datasets: Sequence[str | os.PathLike[str]]
    # where from: a CRDS server, or S3
    server: str  # a CRDS server's URL (env CRDS_SERVER_URL)
    observatory: str
    env: str  # ops, test or int
    bucket: str
    prefix: str
    endpoint_url: str
    no_sign_request: bool
    pickles: bool
    # where to
    cache: str | os.PathLike[str]
    layout: str  # flat or instrument
    mappings_only: bool
    shard: tuple[int, int]  # (K, N): the K-th of N shards
    purge: Sequence[str]  # after sync or repair, remove unneeded "mapping"s, "reference"s
    organize: str  # first move the cache's references into this layout (flat or instrument)
    # how
    dry_run: bool
    verify: bool
    jobs: int
    processes: int  # accepted and ignored: one process fetches everything
    part_size: int
    multipart_threshold: int
    retry_time: float
    timeout: float
    no_fsync: bool  # for throwaway caches: a crash may leave garbage under a final name


SELECTIONS = ("contexts", "last", "all")
# Connections to a CRDS server unless told: a download manager's habit (aria2c's most
# per server is 16). One server answers every user, where S3 spreads 256 over its fleet.
SERVER_JOBS = 16
TOGETHER_AT_MOST_ONE = (SELECTIONS,)
# The least and most each number may be (None: no most); an int least means whole numbers.
RANGES: dict[str, tuple[float, float | None]] = {
    "last": (1, None),
    "jobs": (1, 1024),
    "processes": (1, 64),
    "part_size": (1, None),
    "multipart_threshold": (1, None),
    "retry_time": (0.0, None),
    "timeout": (0.1, None),
}


class Spelling:
    """How a caller names options in its messages: as Python keywords (`jobs=0`)."""

    def name(self, option: str) -> str:
        return option

    def given(self, option: str, value: object) -> str:
        return f"{option}={value!r}"


KEYWORDS = Spelling()


@dataclass(frozen=True)
class Run:
    """Everything one run needs, resolved from options, environment and presets."""

    settings: Settings
    options: SyncOptions
    notes: tuple[str, ...] = ()  # said to a person before the run, if anyone listens


def prepare(action: Action, options: Options, spell: Spelling = KEYWORDS) -> Run:
    """Check and resolve `options`, before any request; a mistake raises SyncError,
    naming the option as the caller spells it (`spell`)."""
    unknown = set(options) - set(Options.__annotations__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    check_platform()
    for group in TOGETHER_AT_MOST_ONE:
        chosen = [name for name in group if options.get(name)]
        if len(chosen) > 1:
            raise SyncError(f"give at most one of {', '.join(map(spell.name, group))}")
    for name, (low, high) in RANGES.items():
        value = options.get(name)
        if value is not None:
            _check_range(name, value, low, high, spell)
    # A path or an s3:// URL names a context by its file name, as crds reads it.
    names = tuple(_file_name(name) for name in options.get("contexts") or ())
    if not any(options.get(name) for name in SELECTIONS) and os.environ.get("CRDS_CONTEXT"):
        names = (os.environ["CRDS_CONTEXT"],)
    shard = options.get("shard")
    if shard is not None and not (len(shard) == 2 and 1 <= shard[0] <= shard[1]):
        raise SyncError(f"{spell.given('shard', shard)}: expected K/N with 1 <= K <= N")
    defaults = TransferOptions()
    part_size, threshold = options.get("part_size"), options.get("multipart_threshold")
    layout = _choice(Layout, "layout", options.get("layout"), spell)
    organize = _choice(Layout, "organize", options.get("organize"), spell)
    if organize and layout and organize is not layout:
        raise SyncError(
            f"{spell.given('organize', organize.value)} and"
            f" {spell.given('layout', layout.value)} disagree"
        )
    settings = resolve_settings(
        server=options.get("server"),
        observatory=options.get("observatory"),
        env=_choice(Env, "env", options.get("env"), spell),
        bucket=options.get("bucket"),
        prefix=options.get("prefix"),
        endpoint_url=options.get("endpoint_url"),
        no_sign_request=options.get("no_sign_request", False),
        cache=_path(options.get("cache")),
        layout=organize or layout,
        pickles=options.get("pickles", False),
        contexts=names,
    )
    dates = [name for name in names if is_date_context(name)]
    if dates and not settings.server:
        raise SyncError(
            f"context {dates[0]}: a date, which only a CRDS server's history resolves"
            f" (give {spell.name('server')} URL)"
        )
    if settings.server and options.get("pickles"):
        raise SyncError(
            f"{spell.name('pickles')} with a CRDS server ({settings.server}):"
            " servers serve the mapping files"
        )
    default_jobs = SERVER_JOBS if settings.server else defaults.jobs
    jobs, note = fit_open_files(options.get("jobs", default_jobs))
    timeout = options.get("timeout", defaults.timeout)
    transfer = TransferOptions(
        jobs=jobs,
        part_size=part_size or defaults.part_size,
        threshold=threshold or defaults.threshold,
        verify=options.get("verify", False),
        retry_time=options.get("retry_time", defaults.retry_time),
        timeout=timeout,
        durable=not options.get("no_fsync", False),
        split_named=part_size is not None or threshold is not None,
    )
    purge = tuple(_choice(Kind, "purge", kind, spell) for kind in options.get("purge") or ())
    if Kind.config in purge:
        raise SyncError(f"{spell.given('purge', 'config')}: only mappings, references and pickles")
    datasets = _datasets(action, options, purge, spell)
    sync_options = SyncOptions(
        Selection(all=options.get("all", False), last=options.get("last"), names=names),
        transfer,
        dry_run=options.get("dry_run", False),
        mappings_only=options.get("mappings_only", False),
        action=action,
        shard=shard,
        purge=purge,
        organize=organize is not None,
        datasets=datasets,
    )
    notes = (note,) if note else ()
    if options.get("processes", 1) > 1:
        notes += (
            f"{spell.name('processes')}: one process fetches everything now (its HTTP runs on"
            " threads of its own, and helper processes no longer paid); ignored",
        )
    return Run(settings, sync_options, notes)


def _datasets(
    action: Action, options: Options, purge: tuple[Kind, ...], spell: Spelling
) -> tuple[Path, ...]:
    """The dataset files, each checked readable; and the options that cannot go with them."""
    given = options.get("datasets")
    if not given:
        return ()
    name = spell.name("datasets")
    if options.get("all"):
        raise SyncError(
            f"{name} with {spell.name('all')}: name the contexts ({spell.name('contexts')})"
            f" or take the newest ({spell.name('last')})"
        )
    if action is Action.purge or Kind.reference in purge:
        raise SyncError(
            f"{name} with a purge of references: it would delete what other datasets need"
        )
    if options.get("pickles"):
        raise SyncError(f"{name} with {spell.name('pickles')}: crds reads the mapping files")
    return tuple(dataset_files([given] if isinstance(given, str | os.PathLike) else given))


def _choice(kind: type[E], name: str, value: str | None, spell: Spelling) -> E | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise SyncError(f"{spell.given(name, value)}: expected one of {known}") from None


def _check_range(name: str, value: object, low: float, high: float | None, spell: Spelling) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = isinstance(low, int)
    if not number or (whole and not isinstance(value, int)):
        kind = "a whole number" if whole else "a number"
        raise SyncError(f"{spell.given(name, value)}: must be {kind}")
    if value < low:  # type: ignore[operator]
        raise SyncError(f"{spell.given(name, value)}: must be at least {low}")
    if high is not None and value > high:  # type: ignore[operator]
        raise SyncError(f"{spell.given(name, value)}: must be at most {high}")


def _file_name(context: str) -> str:
    """`roman_0007.pmap` from `/some/dir/roman_0007.pmap` or `s3://b/p/roman_0007.pmap`."""
    tail = context.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.endswith((".pmap", ".imap", ".rmap")) else context


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)
