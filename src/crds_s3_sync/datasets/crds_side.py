"""What crds itself says about datasets: their headers and best references. Runs in
worker processes only (`run.datasets`), which keeps crds's imports, its global
caches, its log and the environment it reads out of the caller's process.

crds is the authority: the header is read by `crds.data_file.get_header`, the answer
is `crds.getrecommendations`, on a cache holding the run's own rules. crds must
make no network call of its own: the environment puts it in local mode, and its
download functions are replaced by one that refuses and records what crds asked
for (a SYSTEM CRDSCFG reference, say), for the run to fetch before asking again.
This module is the one seam where crds is imported: a missing extra is said here.
"""

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..network.s3errors import one_line

INSTALL = "pip install 'crds-s3-sync[datasets]'"
OBSERVATORIES = ("hst", "jwst", "roman")
# crds collects garbage around every header it reads (`utils.gc_collected`), 36 ms a
# time with crds, astropy and the data models loaded: 75 ms a file, where the read is
# 0.8 ms. crds's own switch turns that off; it changes no answer.
QUIET = {"CRDS_EXPLICIT_GARBAGE_COLLECTION": "0"}
NOT_APPLICABLE = "NOT FOUND n/a"
CAL_VER = ("META.CALIBRATION_SOFTWARE_VERSION", "CAL_VER")

Header = dict[str, Any]
# (dataset, the observatory crds finds, its header or None, CAL_VER or None, an error or None)
Read = tuple[str, str | None, Header | None, str | None, str | None]
# (dataset, context, {type: crds's answer} or an error)
Answer = tuple[str, str, dict[str, str] | str]

_asked: set[str] = set()  # files crds wanted that are not in the cache


def read_headers(paths: list[str], observatory: str, env: dict[str, str]) -> list[Read]:
    """Each dataset's header, and the observatory crds finds it is of: from its
    contents, not its name (crds takes a name beginning `jwst_` at its word, and a
    `.FITS` for HST's), so crds is shown a neutral name with the suffix in lower case."""
    crds = _crds(env)
    from crds.io.factory import get_observatory

    reads: list[Read] = []
    for path in paths:
        neutral = "dataset" + "".join(Path(path).suffixes).lower()
        try:
            found = get_observatory(path, neutral)
            if found != observatory:
                reads.append((path, found, None, None, None))
                continue
            header = crds.data_file.get_header(path, original_name=neutral, observatory=found)
        except (Exception, SystemExit) as exc:  # crds's fatal errors exit
            reads.append((path, None, None, None, _said(exc)))
            continue
        cal_ver = next((str(header[key]) for key in CAL_VER if header.get(key)), None)
        reads.append((path, found, dict(header), cal_ver, None))
    return reads


def recommend(
    headers: list[tuple[str, Header]], contexts: list[str], observatory: str, env: dict[str, str]
) -> tuple[list[Answer], list[str]]:
    """Each dataset's best references under each context, and the files crds asked
    for that the cache lacks (answers given without them are to be asked again)."""
    crds = _crds(env)
    _asked.clear()
    answers: list[Answer] = []
    for path, header in headers:
        for context in contexts:
            try:
                found = crds.getrecommendations(header, context=context, observatory=observatory)
                answers.append((path, context, {str(k): str(v) for k, v in found.items()}))
            except (Exception, SystemExit) as exc:  # crds's fatal errors exit
                answers.append((path, context, _said(exc)))
    return answers, sorted(_asked)


def _crds(env: dict[str, str]) -> Any:
    """crds, offline, on the run's rules (`env`), and on nothing else: every CRDS_*
    setting the user's shell had (an S3 config URI, CRDS_S3_ENABLED, pickled contexts,
    other mapping paths) would send crds to the network or to other rules. A header
    without CAL_VER is read as crds reads it without the jwst package (every type its
    instrument has), whatever else is installed: the answer must not depend on the
    machine. What crds and the libraries under it print is not the run's to show."""
    if any(os.environ.get(key) != value for key, value in env.items()):
        for key in [key for key in os.environ if key.startswith("CRDS_")]:
            del os.environ[key]
        os.environ.update(env | QUIET)
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the worker's life)
        warnings.simplefilter("ignore")
    sys.modules.setdefault("jwst", None)  # type: ignore[arg-type]
    import crds
    from crds.client import api
    from crds.core import log

    if log.THE_LOGGER.console is not None:  # crds's warnings are the run's to say
        log.THE_LOGGER.remove_console_handler()
        log.THE_LOGGER.logger.addHandler(logging.NullHandler())  # not logging's last resort
    if api.dump_references is not _refuse:
        api.dump_references = api.dump_mappings = _refuse
    return crds


def _refuse(context: str, names: list[str] | None = None, **_: object) -> dict[str, str]:
    """crds's downloads: the local paths of files in the cache; any other is recorded
    and refused, so crds falls back as it does offline, and the run fetches it."""
    from crds.core import config
    from crds.core.exceptions import CrdsError

    observatory = os.environ["CRDS_OBSERVATORY"]
    paths = {name: config.locate_file(name, observatory) for name in names or ()}
    missing = [name for name, path in paths.items() if not os.path.exists(path)]
    if names is None or missing:
        _asked.update(missing)
        raise CrdsError(f"offline: {', '.join(missing) or context} not in the cache")
    return paths


def _said(exc: BaseException) -> str:
    """crds's failure for the run to say: its kind and its text on one line."""
    return f"{type(exc).__name__}: {one_line(exc)}"[:400]
