"""The Docker volume plugin protocol on the node's /run/docker/plugins (one server answering to each name in
DRIVERS: `shoal`, and `flocker` for the seed's files): requests parsed into plain arguments, the data
service called, replies rendered. Every failure is the protocol's own error form, a 200 whose `Err`
dockerd shows the user (Flocker's `_endpoint` answered the same way)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.data.model import DRIVERS
from shoal.errors import BadRequest, ShoalError
from shoal.logs import kv

if TYPE_CHECKING:
    from shoal.agent.datasets import DataService

log = logging.getLogger("shoal.agent.plugin")
PLUGIN_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1 << 20

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def plugin_reply(err: ShoalError) -> web.Response:
    """The volume plugin protocol's error form: a 200 whose `Err` dockerd shows the user as the volume
    error, whatever the kind."""
    return web.Response(body=json.dumps({"Err": err.message}).encode(), content_type=PLUGIN_TYPE)


def _name(body: dict[str, Any]) -> str:
    name = body.get("Name", "")
    if not isinstance(name, str):
        raise BadRequest("the volume Name must be a string")
    return name


def _opts(body: dict[str, Any]) -> dict[str, str]:
    opts = body.get("Opts") or {}
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise BadRequest("volume Opts must map names to strings, e.g. --opt size=1G")
    return {str(k): v for k, v in opts.items()}


def _mount_id(body: dict[str, Any]) -> str:
    mid = body.get("ID", "")
    if not isinstance(mid, str) or len(mid) > 256:
        raise BadRequest("the mount ID must be a string (dockerd sends 64 hex digits)")
    return mid


def routes(service: DataService) -> dict[str, Handler]:
    async def activate(_: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["VolumeDriver"]}

    async def capabilities(_: dict[str, Any]) -> dict[str, Any]:
        return {"Capabilities": {"Scope": "local"}}

    async def create(body: dict[str, Any]) -> dict[str, Any]:
        await service.create(_name(body), _opts(body))
        return {"Err": ""}

    async def remove(body: dict[str, Any]) -> dict[str, Any]:
        await service.remove(_name(body))
        return {"Err": ""}

    async def mount(body: dict[str, Any]) -> dict[str, Any]:
        return {"Mountpoint": await service.mount(_name(body), _mount_id(body)), "Err": ""}

    async def unmount(body: dict[str, Any]) -> dict[str, Any]:
        await service.unmount(_name(body), _mount_id(body))
        return {"Err": ""}

    async def path(body: dict[str, Any]) -> dict[str, Any]:
        return {"Mountpoint": await service.mountpoint(_name(body)), "Err": ""}

    async def get(body: dict[str, Any]) -> dict[str, Any]:
        return {"Volume": await service.volume(_name(body)), "Err": ""}

    async def list_(_: dict[str, Any]) -> dict[str, Any]:
        return {"Volumes": await service.volumes(), "Err": ""}

    return {
        "/Plugin.Activate": activate,
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": mount,
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": path,
        "/VolumeDriver.Get": get,
        "/VolumeDriver.List": list_,
        "/VolumeDriver.Capabilities": capabilities,
    }


def _wrap(path: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def h(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
            try:
                body = json.loads(raw or b"{}")
            except ValueError as e:
                raise BadRequest(f"the plugin request is not JSON: {e}") from None
            if not isinstance(body, dict):
                raise BadRequest("the plugin request must be a JSON object")
            out = await handler(body)
        except ShoalError as e:
            kv(log, "plugin call refused", call=path.rsplit(".", 1)[-1], error=e.message)
            return plugin_reply(e)
        except web.HTTPRequestEntityTooLarge:
            return plugin_reply(BadRequest(f"the plugin request is over {MAX_BODY} bytes"))
        except Exception as e:  # a surprise is still an answer in the protocol's form, and in the log
            kv(log, "plugin call failed", logging.ERROR, exc_info=True, call=path.rsplit(".", 1)[-1])
            return plugin_reply(ShoalError(f"the shoal agent failed on {path}: {e}; see its log"))
        return web.Response(body=json.dumps(out).encode(), content_type=PLUGIN_TYPE)

    return h


class PluginServer:
    """One aiohttp app on one unix socket per driver name."""

    def __init__(self, service: DataService, plugins_dir: Path) -> None:
        self.service = service
        self.plugins_dir = plugins_dir
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        for path, handler in routes(self.service).items():
            app.router.add_post(path, _wrap(path, handler))
        return app

    async def start(self) -> None:
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        for name in DRIVERS:
            sock = self.plugins_dir / f"{name}.sock"
            sock.unlink(missing_ok=True)
            await web.UnixSite(self._runner, str(sock)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
