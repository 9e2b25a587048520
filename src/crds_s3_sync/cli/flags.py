"""The command's flags as the run's options: its own spellings and crds sync's, which
action they ask for, and how a message names each option (`--jobs 0`).

Every rule about options (ranges, which exclude each other) is `run.options`'s;
here are only the command line's words for them.
"""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from .. import __version__
from ..datasets.files import DATASET_SUFFIXES
from ..rules.layout import Layout
from ..run.options import Options, Spelling
from ..run.settings import Env
from ..run.stages import Action

# Options whose flag is not their name with dashes.
FLAG_NAMES = {"contexts": "--context", "purge": "--purge-mappings/--purge-references"}


class Flags(Spelling):
    """Options named as the command line names them."""

    def name(self, option: str) -> str:
        return FLAG_NAMES.get(option) or f"--{option.replace('_', '-')}"

    def given(self, option: str, value: object) -> str:
        if isinstance(value, tuple | list):
            value = "/".join(map(str, value)) if option == "shard" else " ".join(map(str, value))
        return f"{self.name(option)} {value}"


FLAGS = Flags()


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


def options_of(params: dict[str, Any], ctx: click.Context) -> tuple[Action, Options]:
    """The action and options the command line asks for. crds sync's spellings keep
    crds sync's meanings: its selections fetch the rules only unless asked for
    references, and its purges follow the sync."""
    p = params
    mappings_only = p["mappings_only"]
    if (p["crds_contexts"] or p["last_n"] is not None) and not p["fetch_references"]:
        mappings_only = True
    check = p["check"] or p["check_files"] or p["check_sha1sum"]
    repair = p["repair"] or p["repair_files"]
    if p["repair_files"]:
        check = False
    asked = [
        action
        for action, on in (
            (Action.key, p["print_key"]),
            (Action.check, check),
            (Action.repair, repair),
            (Action.purge, p["purge"]),
        )
        if on
    ]
    if len(asked) > 1:
        raise typer.BadParameter("give at most one of --print-key, --check, --repair, --purge")
    purge = [k for k in ("mapping", "reference") if p[f"purge_{k}s"]]
    last = p["last"] is not None or p["last_n"] is not None
    counted = "--all" if p["all_"] else "--last" if last else None
    if p["names"] and counted:  # `--all true`, say: the value taken for a context
        raise typer.BadParameter(
            f"{' '.join(p['names'])}: context names and {counted} select differently: give one"
        )
    for name in p["names"] or ():
        if name.lower().endswith(DATASET_SUFFIXES):
            raise typer.BadParameter(
                f"{name} is a dataset file, not a context: give datasets with --datasets"
                " (and contexts by name, NAME.pmap)"
            )
    given: dict[str, Any] = {
        "contexts": tuple(
            [*(p["names"] or ()), *(p["context"] or ()), *(p["crds_contexts"] or ())]
        ),
        "last": p["last"] if p["last_n"] is None else p["last_n"],
        "all": p["all_"],
        "datasets": p["datasets"],
        "env": str(p["env"]) if p["env"] else None,
        "layout": str(p["layout"]) if p["layout"] else None,
        "organize": str(p["organize"]) if p["organize"] else None,
        "mappings_only": mappings_only,
        "shard": parse_shard(p["shard_text"]) if p["shard_text"] else None,
        "purge": purge or None,
        "verify": p["verify"] or p["check_sha1sum"],
        "part_size": p["part_size"] if _given(ctx, "part_size") else None,
        "jobs": p["jobs"] if _given(ctx, "jobs") else None,  # the source's default
        "multipart_threshold": p["threshold"] if _given(ctx, "threshold") else None,
    }
    for name in (
        "server",
        "observatory",
        "bucket",
        "prefix",
        "endpoint_url",
        "no_sign_request",
        "pickles",
        "cache",
        "dry_run",
        "processes",
        "retry_time",
        "timeout",
        "no_fsync",
    ):
        given[name] = p[name]
    options: Options = {k: v for k, v in given.items() if v is not None}  # type: ignore[assignment]
    return (asked[0] if asked else Action.sync), options


def _given(ctx: click.Context, *parameters: str) -> bool:
    """Whether any of `parameters` was set by the user (flag or environment), not left
    at its default."""
    return any(
        (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"
        for name in parameters
    )


# -- the flags, as the command declares them ------------------------------------------


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


AllFlag = Annotated[bool, typer.Option("--all", help="Every context in the bucket.")]

LastFlag = Annotated[
    int | None,
    typer.Option(metavar="N", help="The newest N contexts."),
]

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[CONTEXT]...",
        help="Context names, as crds's commands take them: the same as --context.",
        show_default=False,
    ),
]

DatasetsFlag = Annotated[
    list[str] | None,
    typer.Option(
        "--datasets",
        "--dataset-files",
        metavar="FILE...",
        help="Only the references these datasets need under the contexts, as crds"
        " chooses them (files; directories are searched for .fits and .asdf).",
        show_default=False,
    ),
]

ContextFlag = Annotated[
    list[str] | None,
    typer.Option(
        metavar="NAME",
        help="A .pmap, or an .imap/.rmap for part of one; repeatable.",
    ),
]

ServerFlag = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Sync from this CRDS server (env CRDS_SERVER_URL; default for jwst and hst:"
        " their public servers, which have no public bucket).",
    ),
]

ObservatoryFlag = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="hst, jwst or roman (env CRDS_OBSERVATORY; from a server, the one it serves;"
        " default roman).",
    ),
]

EnvFlag = Annotated[
    Env | None,
    typer.Option(
        "--env",
        help="With --observatory: the preset bucket and prefix.",
    ),
]

BucketFlag = Annotated[str | None, typer.Option(metavar="BUCKET", help="(env CRDS_S3_BUCKET)")]

PrefixFlag = Annotated[str | None, typer.Option(metavar="PREFIX", help="(env CRDS_S3_PREFIX)")]

EndpointUrlFlag = Annotated[
    str | None,
    typer.Option(metavar="URL", help="Another S3 endpoint (env AWS_ENDPOINT_URL)."),
]

NoSignRequestFlag = Annotated[
    bool,
    typer.Option(
        "--no-sign-request",
        help="Anonymous requests (automatic for public buckets and when no credentials exist).",
    ),
]

PicklesFlag = Annotated[
    bool,
    typer.Option(
        "--pickles",
        help="Walk contexts from the bucket's context pickles, as HST's buckets hold them"
        " (automatic when there are pickles and no mappings; env CRDS_USE_PICKLED_CONTEXTS).",
    ),
]

CacheFlag = Annotated[
    Path | None,
    typer.Option(metavar="PATH", help="The CRDS cache (env CRDS_PATH; default /tmp/crds_cache)."),
]

LayoutFlag = Annotated[
    Layout | None,
    typer.Option(
        help="Reference subdirectories (env CRDS_REF_SUBDIR_MODE; default flat).",
    ),
]

MappingsOnlyFlag = Annotated[
    bool,
    typer.Option("--mappings-only", help="Rules files only, no references."),
]

JobsFlag = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="The most requests in flight, all files together; the run finds how many"
        " within it pay. [default: 256 to S3, 16 to a CRDS server]",
        show_default=False,
    ),
]

ProcessesFlag = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Accepted for old scripts and ignored: one process fetches everything.",
    ),
]

PartSizeFlag = Annotated[
    int,
    typer.Option(
        parser=parse_size,
        metavar="SIZE",
        help="Size of one ranged GET of a large file (e.g. 8M, 512K).",
    ),
]

ThresholdFlag = Annotated[
    int,
    typer.Option(
        "--multipart-threshold",
        parser=parse_size,
        metavar="SIZE",
        help="Files this big or bigger are fetched as concurrent ranged GETs.",
    ),
]

RetryTimeFlag = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="How long one request keeps being retried before its file fails.",
    ),
]

NoFsyncFlag = Annotated[
    bool,
    typer.Option(
        "--no-fsync",
        help="Skip flushing files to disk before they appear: faster, but a crash may"
        " leave garbage under a final name. For throwaway caches only.",
    ),
]

TimeoutFlag = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="A request that receives nothing for this long is sent again; a run"
        " waiting this long says what for.",
    ),
]

DryRunFlag = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Plan only; write nothing (with --repair: check only; --purge: list only).",
    ),
]

PrintKeyFlag = Annotated[
    bool,
    typer.Option(
        "--print-key",
        help="Print a cache key for the selection's files (for CI caches); fetch nothing.",
    ),
]

CheckFlag = Annotated[
    bool,
    typer.Option(
        "--check",
        help="List missing and corrupt files (by size; SHA-1 with --verify); exit 1 if any.",
    ),
]

RepairFlag = Annotated[
    bool,
    typer.Option(
        "--repair",
        help="Check, then fetch exactly the missing and corrupt files.",
    ),
]

PurgeFlag = Annotated[
    bool,
    typer.Option(
        "--purge",
        help="Remove the observatory's mappings, references and pickles the selection"
        " does not need.",
    ),
]

ShardTextFlag = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Only the K-th of N shards of the plan (by a hash of each name).",
    ),
]

CrdsContextsFlag = Annotated[
    list[str] | None,
    typer.Option(
        "--contexts",
        metavar="NAME...",
        help="crds sync's spelling: these contexts' rules (references too with"
        " --fetch-references).",
    ),
]

LastNFlag = Annotated[
    int | None,
    typer.Option(
        "--last-n-contexts",
        metavar="N",
        help="crds sync's spelling: the newest N contexts' rules (references too with"
        " --fetch-references).",
    ),
]

FetchReferencesFlag = Annotated[
    bool,
    typer.Option("--fetch-references", help="With crds's spellings: references too."),
]

CheckFilesFlag = Annotated[
    bool, typer.Option("--check-files", "-k", help="crds sync's spelling of --check.")
]

CheckSha1sumFlag = Annotated[
    bool,
    typer.Option("--check-sha1sum", "-s", help="crds sync's: --check --verify."),
]

RepairFilesFlag = Annotated[
    bool, typer.Option("--repair-files", "-r", help="crds sync's spelling of --repair.")
]

PurgeMappingsFlag = Annotated[
    bool,
    typer.Option("--purge-mappings", help="After the sync, remove mappings no context needs."),
]

PurgeReferencesFlag = Annotated[
    bool,
    typer.Option("--purge-references", help="After the sync, remove references no context needs."),
]

OrganizeFlag = Annotated[
    Layout | None,
    typer.Option(
        help="First move the cache's references into this layout (as crds sync"
        " --organize; run it alone)."
    ),
]

LogFormatFlag = Annotated[
    LogFormat,
    typer.Option(help="json: one JSON object per event on stderr."),
]

VerifyFlag = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Re-hash files already in the cache instead of trusting their size.",
    ),
]

JsonFlag = Annotated[
    bool,
    typer.Option("--json", help="One JSON document on stdout at the end."),
]

QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")]

DebugFlag = Annotated[
    bool,
    typer.Option(
        "--debug",
        help="On an internal error (exit 3), print the traceback instead of saving it.",
    ),
]

VersionFlag = Annotated[
    bool,
    typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
]
