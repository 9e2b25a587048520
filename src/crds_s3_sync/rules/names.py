"""The gate every name from the bucket passes before it becomes a local path.

Names come from mappings, server_config and bucket listings, all of which an
attacker with write access to a bucket controls. Only plain CRDS file names are
accepted, so that joining a name to a cache directory can never leave it.
"""

import re

from ..errors import UnsafeNameError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Every name of a real plan, in one C call: printable ASCII, no separator, no "..", no
# leading ".", at most 255 characters (so bytes). The rest go through `_problem`.
_PLAIN = re.compile(r"(?!\.)(?:[\x20-\x2d\x30-\x5b\x5d-\x7e]|\.(?!\.)){1,255}")
# ext4, XFS and most network file systems refuse longer components.
MAX_NAME_BYTES = 255


def check_name(name: object, where: str) -> str:
    """Return `name` if it is a plain file name, else raise naming `where` it came from."""
    if type(name) is str and _PLAIN.fullmatch(name):
        return name
    if not isinstance(name, str) or not name:
        raise UnsafeNameError(f"{where}: file name {name!r} is not a non-empty string")
    problem = _problem(name)
    if problem:
        raise UnsafeNameError(f"{where}: refusing file name {name!r}: {problem}")
    return name


def is_plain_name(name: str) -> bool:
    return bool(name) and _problem(name) is None


def _problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if name.startswith("."):
        # Also keeps the cache's own hidden temporary files out of reach.
        return "starts with '.'"
    if _CONTROL.search(name):
        return "contains a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


_DATE = re.compile(
    r"(?:[a-z]+-)?\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?\Z",
    re.ASCII | re.IGNORECASE,
)


def is_date_context(name: str) -> bool:
    """crds's date contexts (`jwst-2024-01-01T00:00:00`): the context in use then,
    which only a server's history can say."""
    return bool(_DATE.match(name))
