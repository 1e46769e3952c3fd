"""Routes a plugin adds to the store server (``agl_register_server_routes``), over real HTTP.

The dashboard plugin is the real user of this hook (tests/plugins/dashboard); here a small plugin
registered by hand shows the contract: API routes under ``/v1/agl`` behind the token, root routes,
public paths, a broken registration left out, and ``/`` naming the dashboard's distribution when no
plugin serves a page there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from agentlightning import hookimpl, plugins
from agentlightning.server import ServerRoutes, StoreServer, app
from agentlightning.store.memory import InMemoryLightningStore

api = APIRouter()
root = APIRouter()


@api.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "from a plugin"}


@root.get("/page.txt")
async def page() -> PlainTextResponse:
    return PlainTextResponse("a page without data")


@root.get("/private.txt")
async def private() -> PlainTextResponse:
    return PlainTextResponse("needs the token")


class RoutesPlugin:
    @hookimpl
    def agl_register_server_routes(self, register: Callable[[str, Any], None]) -> None:
        register("hello", ServerRoutes(api=api, root=root, public_paths=frozenset({"/page.txt"})))
        register("not-routes", object())
        register("missing", plugins.LazyObject("no_such_module_agl:ROUTES"))


@pytest.fixture()
def fresh_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin manager without entry points and a shared FastAPI app built again for the test."""
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.setattr(app, "_SHARED", None)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


def serve(token: str | None = None) -> StoreServer:
    return StoreServer(InMemoryLightningStore(), port=0, token=token).start()


@pytest.mark.usefixtures("fresh_app")
def test_hook_agl_register_server_routes(caplog: pytest.LogCaptureFixture) -> None:
    plugins.get_plugin_manager().register(RoutesPlugin(), name="routes-plugin")
    assert set(plugins.registered("server_routes")) == {"hello", "not-routes", "missing"}
    with caplog.at_level(logging.WARNING, logger="agentlightning.server.app"):
        server = serve(token="secret")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/v1/agl/hello").status_code == 401  # API routes are behind the token
            answer = client.get("/v1/agl/hello", headers={"Authorization": "Bearer secret"})
            assert answer.json() == {"hello": "from a plugin"}
            assert client.get("/page.txt").text == "a page without data"  # a public path
            assert client.head("/page.txt").status_code == 405  # past the token check; the route has GET only
            assert client.post("/page.txt").status_code == 401  # public for GET and HEAD only
            assert client.get("/private.txt").status_code == 401
            assert client.get("/private.txt", headers={"Authorization": "Bearer secret"}).status_code == 200
            assert client.get("/health", headers={"Authorization": "Bearer secret"}).status_code == 404
    finally:
        server.stop()
    assert "leaving out the routes 'not-routes': TypeError: registered object, not a ServerRoutes" in caplog.text
    assert "leaving out the routes 'missing': PluginLoadError" in caplog.text


@pytest.mark.usefixtures("fresh_app")
def test_without_a_page_plugin_the_root_says_what_to_install() -> None:
    server = serve()
    try:
        answer = httpx.get(f"{server.url}/", timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 404
    message = answer.json()["message"]
    assert "the API is under /v1/agl" in message
    assert "would come with agentlightning-dashboard: pip install agentlightning-dashboard" in message


@pytest.mark.usefixtures("fresh_app")
def test_without_the_plugin_agl_dashboard_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    from agentlightning.cli import main

    assert main(["dashboard", "--store", "memory://"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'dashboard'" in error
    assert "pip install agentlightning-dashboard" in error
