"""The source behind the pacer, for requests whose answer is all there is to them:
planning's reads, HEADs and listings. Each is one request in a slot of the run's
window, tried by the run's one retry policy (`pacer`). The transfer's GETs are
paced by the transfer itself, since their attempts also write and verify."""

from dataclasses import dataclass

from ..network.location import Place
from ..network.store import Store
from .pacer import Pacer


@dataclass(frozen=True)
class Paced:
    source: Store
    pacer: Pacer

    async def read(self, location: Place, name: str, limit: int) -> bytes:
        """A whole small object (server_config, a mapping, a context pickle); one bigger
        than `limit` is refused unread, so a hostile bucket cannot fill memory."""
        data = await self.pacer.call(
            location.url(name), lambda: self.source.read(location, name, limit=limit)
        )
        return bytes(data)

    async def size(self, location: Place, name: str) -> int:
        """An object's size, from a HEAD."""
        return await self.pacer.call(location.url(name), lambda: self.source.size(location, name))

    async def list_names(self, location: Place) -> list[str]:
        """Names of the objects directly under `location` (not in deeper "folders")."""
        return await self.pacer.call(location.url(""), lambda: self.source.list_names(location))
