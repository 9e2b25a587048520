"""The `crds-s3-sync` command: options, output and exit status.

Exit status: 0 every planned file is valid in the cache; 1 some files failed, or
--check found problems; 2 usage, configuration or source errors, a full disk, or
a network or credentials setup that no retry can fix (nothing was written beyond
verified files); 3 an internal error (`command`); 130 interrupted (Ctrl-C), 143
and 129 stopped by SIGTERM and SIGHUP.
"""

import gc
import json
import logging
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from .. import __version__
from ..api import Options, Stopped, execute, prepare
from ..engine.cores import MOST
from ..engine.ledger import Ledger
from ..engine.transfer import TransferOptions
from ..errors import SyncError
from ..network.s3errors import one_line
from ..rules.layout import Layout
from ..run.settings import Env
from ..run.stages import Action
from .command import OneLineCommand
from .outcomes import outcome_of
from .views import JsonLines, make_view

app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """`8M`, `512K`, `1G` or plain bytes (binary units, as s5cmd and the AWS CLI use)."""
    number, unit = str(text).strip().upper().removesuffix("IB").removesuffix("B"), ""
    if number and number[-1] in _UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size like 8M or 512K") from None
    if value < 1:
        raise typer.BadParameter(f"{text!r}: must be at least one byte")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` with 1 <= K <= N: the K-th of N shards."""
    index, _, count = str(text).partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not K/N, like 1/4") from None
    if not 1 <= k <= n:
        raise typer.BadParameter(f"{text!r}: K must be from 1 to N")
    return k, n


def _given(ctx: typer.Context, *parameters: str) -> bool:
    """Whether any of `parameters` was set by the user (flag or environment), not left
    at its default."""
    return any(
        (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"
        for name in parameters
    )


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


EPILOG = """\b
Examples:
  crds-s3-sync                      the operational context (or $CRDS_CONTEXT)
  crds-s3-sync --last 2             the newest two contexts
  crds-s3-sync --all --dry-run      what every context needs; fetch nothing
  crds-s3-sync --check --verify     re-hash the cache against the plan
  crds-s3-sync --observatory jwst --bucket MIRROR --prefix crds --last 1

\b
Exit status:
  0    every planned file is valid in the cache
  1    some files failed (the rest were synced), or problems were found
  2    a usage, configuration or source error (nothing unverified written)
  3    an internal error (its traceback is saved; --debug prints it)
  130  Ctrl-C; 143 SIGTERM; 129 SIGHUP (run again to resume)
"""


@app.command(
    cls=OneLineCommand,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def run(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Every context in the bucket.")] = False,
    last: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="The newest N contexts."),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="A .pmap, or an .imap/.rmap for part of one; repeatable.",
        ),
    ] = None,
    observatory: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="hst, jwst or roman (env CRDS_OBSERVATORY; default roman)."
        ),
    ] = None,
    env: Annotated[
        Env | None,
        typer.Option(
            "--env",
            help="With --observatory: the preset bucket and prefix.",
        ),
    ] = None,
    bucket: Annotated[
        str | None, typer.Option(metavar="BUCKET", help="(env CRDS_S3_BUCKET)")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(metavar="PREFIX", help="(env CRDS_S3_PREFIX)")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Another S3 endpoint (env AWS_ENDPOINT_URL)."),
    ] = None,
    no_sign_request: Annotated[
        bool,
        typer.Option(
            "--no-sign-request",
            help="Anonymous requests (automatic for public buckets and when no credentials exist).",
        ),
    ] = False,
    pickles: Annotated[
        bool,
        typer.Option(
            "--pickles",
            help="Walk contexts from the bucket's context pickles, as HST's buckets hold them"
            " (automatic when there are pickles and no mappings; env CRDS_USE_PICKLED_CONTEXTS).",
        ),
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH", help="The CRDS cache (env CRDS_PATH; default /tmp/crds_cache)."
        ),
    ] = None,
    layout: Annotated[
        Layout | None,
        typer.Option(
            help="Reference subdirectories (env CRDS_REF_SUBDIR_MODE; default flat).",
        ),
    ] = None,
    mappings_only: Annotated[
        bool,
        typer.Option("--mappings-only", help="Rules files only, no references."),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            metavar="N",
            help="The most requests in flight, all files together; the run finds how many"
            " within it pay.",
        ),
    ] = TransferOptions.jobs,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            metavar="N",
            help="Processes fetching small files, an event loop each (default: one per"
            f" usable core, at most {MOST}).",
        ),
    ] = None,
    part_size: Annotated[
        int,
        typer.Option(
            parser=parse_size,
            metavar="SIZE",
            help="Size of one ranged GET of a large file (e.g. 8M, 512K).",
        ),
    ] = f"{TransferOptions.part_size >> 20}M",
    threshold: Annotated[
        int,
        typer.Option(
            "--multipart-threshold",
            parser=parse_size,
            metavar="SIZE",
            help="Files this big or bigger are fetched as concurrent ranged GETs.",
        ),
    ] = f"{TransferOptions.threshold >> 20}M",
    retry_time: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="How long one request keeps being retried before its file fails.",
        ),
    ] = TransferOptions.retry_time,
    no_fsync: Annotated[
        bool,
        typer.Option(
            "--no-fsync",
            help="Skip flushing files to disk before they appear: faster, but a crash may"
            " leave garbage under a final name. For throwaway caches only.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            metavar="SECONDS",
            help="A request that receives nothing for this long is sent again; a run"
            " waiting this long says what for.",
        ),
    ] = TransferOptions.timeout,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Plan only; write nothing (with --repair: check only; --purge: list only).",
        ),
    ] = False,
    print_key: Annotated[
        bool,
        typer.Option(
            "--print-key",
            help="Print a cache key for the selection's files (for CI caches); fetch nothing.",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="List missing and corrupt files (by size; SHA-1 with --verify); exit 1 if any.",
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Check, then fetch exactly the missing and corrupt files.",
        ),
    ] = False,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Remove the observatory's mappings, references and pickles the selection"
            " does not need.",
        ),
    ] = False,
    shard_text: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="K/N",
            help="Only the K-th of N shards of the plan (by a hash of each name).",
        ),
    ] = None,
    crds_contexts: Annotated[
        list[str] | None,
        typer.Option(
            "--contexts",
            metavar="NAME...",
            help="crds sync's spelling: these contexts' rules (references too with"
            " --fetch-references).",
        ),
    ] = None,
    last_n: Annotated[
        int | None,
        typer.Option(
            "--last-n-contexts",
            min=1,
            metavar="N",
            help="crds sync's spelling: the newest N contexts' rules (references too with"
            " --fetch-references).",
        ),
    ] = None,
    fetch_references: Annotated[
        bool,
        typer.Option("--fetch-references", help="With crds's spellings: references too."),
    ] = False,
    check_files: Annotated[
        bool, typer.Option("--check-files", "-k", help="crds sync's spelling of --check.")
    ] = False,
    check_sha1sum: Annotated[
        bool,
        typer.Option("--check-sha1sum", "-s", help="crds sync's: --check --verify."),
    ] = False,
    repair_files: Annotated[
        bool, typer.Option("--repair-files", "-r", help="crds sync's spelling of --repair.")
    ] = False,
    purge_mappings: Annotated[
        bool,
        typer.Option("--purge-mappings", help="After the sync, remove mappings no context needs."),
    ] = False,
    purge_references: Annotated[
        bool,
        typer.Option(
            "--purge-references", help="After the sync, remove references no context needs."
        ),
    ] = False,
    organize: Annotated[
        Layout | None,
        typer.Option(
            help="First move the cache's references into this layout (as crds sync"
            " --organize; run it alone)."
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(help="json: one JSON object per event on stderr."),
    ] = LogFormat.text,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Re-hash files already in the cache instead of trusting their size.",
        ),
    ] = False,
    json_: Annotated[
        bool,
        typer.Option("--json", help="One JSON document on stdout at the end."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an internal error (exit 3), print the traceback instead of saving it.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Fill a CRDS cache from S3: plan the files the chosen contexts need, then fetch and
    verify them concurrently."""
    # crds sync's spellings, with its meanings: its selections fetch the rules only,
    # unless asked for references; its purges follow the sync.
    spelled_as_crds = bool(crds_contexts) or last_n is not None
    if spelled_as_crds and not fetch_references:
        mappings_only = True
    context = [*(context or ()), *(crds_contexts or ())]
    last = last if last_n is None else last_n
    check = check or check_files or check_sha1sum
    verify = verify or check_sha1sum
    if repair_files:
        repair, check = True, False
    purge_after = [
        k for k, on in (("mapping", purge_mappings), ("reference", purge_references)) if on
    ]
    chosen = sum([all_, last is not None, bool(context)])
    if chosen > 1:
        raise typer.BadParameter("give at most one of --all, --last and --context")
    actions = [
        a
        for a, on in (
            (Action.key, print_key),
            (Action.check, check),
            (Action.repair, repair),
            (Action.purge, purge),
        )
        if on
    ]
    if len(actions) > 1:
        raise typer.BadParameter("give at most one of --print-key, --check, --repair, --purge")
    action = actions[0] if actions else Action.sync
    shard = parse_shard(shard_text) if shard_text else None
    given: Options = {
        "contexts": tuple(context or ()),
        "last": last,
        "all": all_,
        "observatory": observatory,
        "env": env.value if env else None,
        "bucket": bucket,
        "prefix": prefix,
        "endpoint_url": endpoint_url,
        "no_sign_request": no_sign_request,
        "pickles": pickles,
        "cache": cache,
        "layout": layout.value if layout else None,
        "mappings_only": mappings_only,
        "shard": shard,
        "purge": purge_after or None,
        "organize": organize.value if organize else None,
        "dry_run": dry_run,
        "verify": verify,
        "jobs": jobs,
        "processes": processes,
        "part_size": part_size if _given(ctx, "part_size") else None,
        "multipart_threshold": threshold if _given(ctx, "threshold") else None,
        "retry_time": retry_time,
        "timeout": timeout,
        "no_fsync": no_fsync,
    }
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)  # a CI log wraps its own lines
    ledger = Ledger()
    view = make_view(ledger, console, quiet, log_format.value, sys.stdout.isatty())
    try:
        run = prepare(action, {k: v for k, v in given.items() if v is not None})  # type: ignore[misc]
        for note in run.notes:
            console.print(note, highlight=False, markup=False, soft_wrap=True)
        settings, options = run.settings, run.options
        if settings.cache_is_default and not dry_run and action is not Action.key:
            console.print(f"CRDS_PATH is not set: using {settings.cache}", highlight=False)
        gc.freeze()  # what imports made (botocore's models) is never garbage: stop re-scanning it
        with view:
            result = execute(run, ledger)
    except SyncError as exc:
        _fail(f"error: {one_line(exc)}", 2, json_, log_format)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {exc}"
        _fail(f"{what}; {_so_far(ledger)}", 128 + signum, json_, log_format)
    outcome = outcome_of(result, options, settings.cache)
    document = outcome.document()
    if json_:
        print(json.dumps(document, indent=1))
    else:
        for line in outcome.listing():
            print(line)
    if isinstance(view, JsonLines):  # the summary as one more event, not prose
        view.emit("summary", **{k: v for k, v in document.items() if k != "plan"})
    else:
        for line in outcome.summary():
            console.print(line, highlight=False, markup=False)
        for line in outcome.failures():
            console.print(line, style="red", highlight=False, markup=False)
    raise typer.Exit(outcome.exit_code())


def _fail(message: str, code: int, json_: bool, log_format: "LogFormat") -> NoReturn:
    """The run ends early: one line on stderr (an event, with --log-format json), and
    with --json still one document on stdout."""
    if log_format is LogFormat.json:
        JsonLines(Ledger(), sys.stderr).emit("error", message=message, exit=code)
    else:
        sys.stderr.write(f"crds-s3-sync: {message}\n")
    if json_:
        print(json.dumps({"error": message.removeprefix("error: "), "exit": code}, indent=1))
    raise typer.Exit(code)


def _so_far(ledger: Ledger) -> str:
    """What an interrupted run had done: the summary it did not get to print."""
    if not ledger.files:
        return "nothing was written yet"
    report = ledger.report
    return (
        f"{ledger.done_files} of {ledger.files} files done ({report.downloaded} downloaded, "
        f"{report.skipped} already valid, {len(report.failed)} failed); run again to resume"
    )


def main() -> None:
    # botocore's loggers have no handler; Python's last resort would print their
    # warnings, tracebacks included, in the middle of the dashboard.
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    app()
