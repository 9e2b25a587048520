"""What a CRDS server says before a sync: in one `get_server_info`, the observatory,
every file's size and SHA-1 (server_config, kept as crds keeps it) and where its
files are; then, for a context given as a date, which context that was
(`get_context_by_date`). No request per file: the rest is the engine's GETs."""

import re
from dataclasses import dataclass, replace
from typing import Any

from ..engine.ledger import Ledger
from ..engine.pacer import Pacer
from ..errors import FormatError, SyncError
from ..network import crds_rpc
from ..network.server_source import ServerSource
from ..rules.names import check_name, is_date_context
from ..rules.server_config import file_urls, from_server_info
from ..rules.walker import Selection
from .settings import Settings

_CONTEXT = re.compile(r"^[a-z]+_\d+\.pmap$")


@dataclass(frozen=True)
class Answer:
    settings: Settings  # with the observatory and the file URLs the server gave
    config_bytes: bytes  # server_config as crds writes it from the same answer
    selection: Selection  # dates resolved into contexts


async def ask_server(
    source: ServerSource, pacer: Pacer, settings: Settings, selection: Selection, ledger: Ledger
) -> Answer:
    server = settings.config_where
    ledger.note(f"asking {server} for its contexts and files")
    info = await pacer.call(server, lambda: source.ask("get_server_info"))
    if not isinstance(info, dict) or not isinstance(info.get("observatory"), str):
        raise FormatError(f"{server}: an answer without the observatory it serves")
    observatory = info["observatory"].lower()
    urls = file_urls(info, observatory, server)
    mapping_url, reference_url = (crds_rpc.checked_url(url, f"{server}: file URL") for url in urls)
    if settings.server.startswith("https://") and not all(u.startswith("https://") for u in urls):
        raise SyncError(f"{server}: serves its files over plain HTTP: refused from HTTPS")
    settings = settings.answered(observatory, mapping_url, reference_url)
    names = []
    for name in selection.names:
        if is_date_context(name):
            names.append(await _by_date(source, pacer, name, observatory))
        else:
            names.append(name)
    config = from_server_info(info, source.server)
    return Answer(settings, config, replace(selection, names=tuple(names)))


async def _by_date(source: ServerSource, pacer: Pacer, date: str, observatory: str) -> str:
    """The context in use at `date`, as the server's history has it."""
    where = f"{source.server} (get_context_by_date {date})"
    found: Any = await pacer.call(
        where, lambda: source.ask("get_context_by_date", date, observatory)
    )
    if not isinstance(found, str) or not _CONTEXT.match(found):
        raise SyncError(f"{where}: answered {found!r:.80}, not a context")
    return check_name(found, where)
