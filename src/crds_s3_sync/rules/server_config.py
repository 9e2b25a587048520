"""CRDS's `server_config`: which contexts exist and what every file should hash to.

The file is a Python literal written by `pprint`; it is read with
`ast.literal_eval` and never evaluated. `download_metadata` is the source of
truth for verification: `{"crds_encoded": "1.0", "crds_payload": B}` with B the
base64 of gzipped JSON `{name: {"size": "123", "sha1sum": "..."}}`.
"""

import ast
import base64
import binascii
import gzip
import hashlib
import json
import pprint
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import FormatError
from .names import check_name

_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class FileMeta(NamedTuple):
    """A file's size and SHA-1. A tuple, made three times faster than a frozen
    dataclass: HST's server_config lists 38,000 files."""

    size: int
    sha1: str

    @classmethod
    def of(cls, data: bytes) -> "FileMeta":
        """Of bytes in hand (server_config, a context pickle): the cache gets exactly
        the bytes that were read."""
        return cls(len(data), hashlib.sha1(data).hexdigest())


@dataclass(frozen=True)
class ServerConfig:
    observatory: str
    operational_context: str
    mappings: list[str]
    bad_files: list[str]
    metadata: dict[str, FileMeta]
    raw: dict[str, Any] = field(repr=False)


def parse_server_config(text: str, where: str) -> ServerConfig:
    try:
        raw = ast.literal_eval(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise FormatError(f"{where}: not a Python literal ({_first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{where}: expected a dict, found {type(raw).__name__}")
    observatory = _field(raw, "observatory", str, where).lower()
    context = _field(raw, "operational_context", str, where)
    mappings = _field(raw, "mappings", list, where, default=[])
    bad_files = _field(raw, "bad_files_list", list, where, default=[])
    for name in [*mappings, *bad_files]:
        if not isinstance(name, str):
            raise FormatError(f"{where}: file lists must hold strings, found {name!r}")
    metadata = decode_download_metadata(raw.get("download_metadata", {}), where)
    return ServerConfig(observatory, context, mappings, bad_files, metadata, raw)


def decode_download_metadata(value: object, where: str) -> dict[str, FileMeta]:
    """Decode CRDS's encoded payload (or a plain dict, as old servers sent) into FileMeta."""
    where = f"{where}: download_metadata"
    if isinstance(value, dict) and "crds_payload" in value:
        payload = value["crds_payload"]
        if not isinstance(payload, str):
            raise FormatError(f"{where}: crds_payload is not a string")
        try:
            value = json.loads(gzip.decompress(base64.b64decode(payload, validate=True)))
        except (binascii.Error, OSError, EOFError, zlib.error) as exc:
            raise FormatError(f"{where}: payload is not base64 of gzip ({exc})") from None
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{where}: payload is not JSON ({_first_line(exc)})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{where}: expected a mapping of file name to size and sha1sum")
    metadata = {}
    for name, info in value.items():
        check_name(name, where)
        try:
            size = int(info["size"])
            sha1 = str(info["sha1sum"]).lower()
        except (TypeError, KeyError, ValueError):
            raise FormatError(f"{where}: bad entry for {name!r}: {info!r:.80}") from None
        if size < 0 or not _SHA1.match(sha1):
            raise FormatError(f"{where}: bad size or sha1sum for {name!r}")
        metadata[name] = FileMeta(size, sha1)
    return metadata


def from_server_info(info: dict[str, Any], server: str) -> bytes:
    """server_config as crds writes it after asking a server (heavy_client's
    cache_server_info: `pprint` of the answer with the client's own fields), so that
    crds reads the cache offline as if it had synced it itself."""
    return pprint.pformat(
        {**info, "server": server, "status": "server", "connected": True}
    ).encode()


def file_urls(raw: dict[str, Any], observatory: str, where: str) -> tuple[str, str]:
    """Where a server serves mappings and references: `{observatory: URL}`, or an older
    answer's `{"unchecked": {observatory: URL}, ...}` (crds's api.get_server_info)."""
    urls = []
    for key in ("mapping_url", "reference_url"):
        value = raw.get(key)
        if isinstance(value, dict) and "unchecked" in value:
            value = value["unchecked"]
        url = value.get(observatory) if isinstance(value, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise FormatError(f"{where}: no {key} for {observatory} in the answer")
        urls.append(url.rstrip("/"))
    return urls[0], urls[1]


_REQUIRED = object()


def _field(raw: dict, key: str, kind: type, where: str, default: object = _REQUIRED) -> Any:
    if key not in raw:
        if default is _REQUIRED:
            raise FormatError(f"{where}: missing {key!r}")
        return default
    if not isinstance(raw[key], kind):
        raise FormatError(f"{where}: {key!r} should be a {kind.__name__}")
    return raw[key]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
