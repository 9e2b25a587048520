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
from typing import NoReturn

import typer
from rich.console import Console

from ..api import Stopped, execute
from ..engine.ledger import Ledger
from ..engine.transfer import TransferOptions
from ..errors import SyncError
from ..network.s3errors import one_line
from ..run.options import prepare
from ..run.stages import Action
from . import flags
from .command import OneLineCommand
from .flags import FLAGS, LogFormat, options_of
from .outcomes import outcome_of
from .views import JsonLines, make_view

app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)


EPILOG = """\b
Examples:
  crds-s3-sync                      the operational context (or $CRDS_CONTEXT)
  crds-s3-sync --last 2             the newest two contexts
  crds-s3-sync jwst_1200.pmap       a context by name, as crds takes it
  crds-s3-sync --all --dry-run      what every context needs; fetch nothing
  crds-s3-sync --datasets uncal/    the references these datasets need
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
    names: flags.NamesArgument = None,
    all_: flags.AllFlag = False,
    last: flags.LastFlag = None,
    context: flags.ContextFlag = None,
    datasets: flags.DatasetsFlag = None,
    server: flags.ServerFlag = None,
    observatory: flags.ObservatoryFlag = None,
    env: flags.EnvFlag = None,
    bucket: flags.BucketFlag = None,
    prefix: flags.PrefixFlag = None,
    endpoint_url: flags.EndpointUrlFlag = None,
    no_sign_request: flags.NoSignRequestFlag = False,
    pickles: flags.PicklesFlag = False,
    cache: flags.CacheFlag = None,
    layout: flags.LayoutFlag = None,
    mappings_only: flags.MappingsOnlyFlag = False,
    jobs: flags.JobsFlag = TransferOptions.jobs,
    processes: flags.ProcessesFlag = None,
    part_size: flags.PartSizeFlag = f"{TransferOptions.part_size >> 20}M",
    threshold: flags.ThresholdFlag = f"{TransferOptions.threshold >> 20}M",
    retry_time: flags.RetryTimeFlag = TransferOptions.retry_time,
    no_fsync: flags.NoFsyncFlag = False,
    timeout: flags.TimeoutFlag = TransferOptions.timeout,
    dry_run: flags.DryRunFlag = False,
    print_key: flags.PrintKeyFlag = False,
    check: flags.CheckFlag = False,
    repair: flags.RepairFlag = False,
    purge: flags.PurgeFlag = False,
    shard_text: flags.ShardTextFlag = None,
    crds_contexts: flags.CrdsContextsFlag = None,
    last_n: flags.LastNFlag = None,
    fetch_references: flags.FetchReferencesFlag = False,
    check_files: flags.CheckFilesFlag = False,
    check_sha1sum: flags.CheckSha1sumFlag = False,
    repair_files: flags.RepairFilesFlag = False,
    purge_mappings: flags.PurgeMappingsFlag = False,
    purge_references: flags.PurgeReferencesFlag = False,
    organize: flags.OrganizeFlag = None,
    log_format: flags.LogFormatFlag = LogFormat.text,
    verify: flags.VerifyFlag = False,
    json_: flags.JsonFlag = False,
    quiet: flags.QuietFlag = False,
    debug: flags.DebugFlag = False,
    version: flags.VersionFlag = False,
) -> None:
    """Fill a CRDS cache from S3 or a CRDS server: plan the files the chosen contexts
    need, then fetch and verify them concurrently."""
    action, given = options_of(ctx.params, ctx)
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)  # a CI log wraps its own lines
    ledger = Ledger()
    view = make_view(ledger, console, quiet, str(log_format), sys.stdout.isatty())
    try:
        run = prepare(action, given, FLAGS)
        for note in run.notes:
            console.print(note, highlight=False, markup=False, soft_wrap=True)
        if run.settings.cache_is_default and not dry_run and action is not Action.key:
            console.print(f"CRDS_PATH is not set: using {run.settings.cache}", highlight=False)
        gc.freeze()  # what imports made (botocore's models) is never garbage: stop re-scanning it
        with view:
            result = execute(run, ledger)
    except SyncError as exc:
        _fail(f"error: {one_line(exc)}", 2, json_, log_format)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {exc}"
        _fail(f"{what}; {_so_far(ledger)}", 128 + signum, json_, log_format)
    outcome = outcome_of(result, run.options, run.settings.cache)
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
    if log_format == LogFormat.json:
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
