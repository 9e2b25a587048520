"""The dataset files a run is given: directories searched, each file looked at before
anything is asked of the network. A saved HTML error page or a truncated download
is said here, naming the file, rather than as a crds traceback after the rules
were fetched."""

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import SyncError

# What a directory is searched for; positional arguments ending so are datasets too.
SEARCHED = (".fits", ".asdf")
DATASET_SUFFIXES = (*SEARCHED, ".fits.gz")
FITS_BLOCK = 2880  # a FITS file is whole blocks of this many bytes
FITS_START, ASDF_START, GZIP_START = b"SIMPLE  =", b"#ASDF", b"\x1f\x8b"
CONTEXT_SUFFIXES = (".pmap", ".imap", ".rmap")


def dataset_files(given: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given (a shell's glob arrives as files) and the `.fits` and `.asdf`
    files under directories, each once, in order; every one readable as FITS or ASDF."""
    found: dict[Path, None] = {}
    for item in given:
        path = Path(item)
        if path.name.endswith(CONTEXT_SUFFIXES):  # `--datasets *.fits jwst_1200.pmap`
            raise SyncError(
                f"{path.name} is a context, not a dataset: name contexts before --datasets"
                " or with --context"
            )
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*") if p.name.lower().endswith(SEARCHED) and p.is_file()
            )
            if not inside:
                raise SyncError(f"{path}: no .fits or .asdf files in this directory")
            found.update(dict.fromkeys(inside))
        else:
            found[path] = None
    for path in found:
        check_dataset(path)
    return list(found)


def check_dataset(path: Path) -> None:
    """That `path` begins as a FITS (or gzipped FITS) or ASDF file does, and a FITS file
    is whole blocks."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(FITS_START))
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise SyncError(f"{path}: no such dataset file") from None
    except OSError as exc:
        raise SyncError(f"{path}: cannot read the dataset: {exc.strerror}") from None
    if start.startswith(ASDF_START) or (
        start.startswith(GZIP_START) and path.name.lower().endswith(".gz")
    ):
        return
    if not start.startswith(FITS_START):
        shown = start.decode("latin-1").strip() or "nothing"
        raise SyncError(f"{path}: not a FITS or ASDF file (it begins {shown!r})")
    if size % FITS_BLOCK:
        raise SyncError(
            f"{path}: not a whole FITS file ({size:,} bytes, not a multiple of {FITS_BLOCK}:"
            " a truncated download?)"
        )
