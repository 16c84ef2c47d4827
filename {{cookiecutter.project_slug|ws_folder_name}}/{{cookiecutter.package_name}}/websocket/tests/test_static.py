"""`StaticFolder` as a mount calls it (Starlette's ``Mount``, `asgi_backend.Router.mount`:
the prefix in ``root_path``): what it serves, and everything it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..asgi_types import Message
from ..static import StaticFolder
from ..testing import ScriptedClient

PAGE = b"<!doctype html><title>app</title>"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A browser app: its page, a module and its dependency, a hidden file, and a secret
    beside the folder, with a symbolic link to it from inside."""
    app = tmp_path / "browser"
    (app / "node_modules" / "centrifuge" / "build").mkdir(parents=True)
    (app / "index.html").write_bytes(PAGE)
    (app / "app.js").write_text('import { Centrifuge } from "centrifuge";\n')
    (app / "node_modules" / "centrifuge" / "build" / "index.mjs").write_text("export {};\n")
    (app / "docs").mkdir()
    (app / "docs" / "index.html").write_bytes(b"<p>docs</p>")
    (app / ".env").write_text("SECRET=1\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    (app / "link.txt").symlink_to(tmp_path / "secret.txt")
    (app / "env.txt").symlink_to(app / ".env")
    (app / "out").mkdir()
    (app / "out" / "index.html").symlink_to(tmp_path / "secret.txt")
    return app


@pytest.fixture
def static(folder: Path) -> StaticFolder:
    return StaticFolder(folder)


async def call(static: StaticFolder, method: str, path: str) -> list[Message]:
    """``method path`` as a mount on ``/browser`` passes it on; what ``static`` sends."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": "/browser"}
    await static({**scope, "headers": [], "query_string": b""}, receive, send)
    return sent


def response(sent: list[Message]) -> tuple[int, dict[bytes, bytes], bytes]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers = dict(sent[0]["headers"])
    assert int(headers[b"content-length"]) == len(sent[1]["body"]) or not sent[1]["body"]
    return sent[0]["status"], headers, sent[1]["body"]


async def test_files_are_served_with_their_types(static: StaticFolder) -> None:
    status, headers, body = response(await call(static, "GET", "/browser/"))
    assert (status, body) == (200, PAGE)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"x-content-type-options"] == b"nosniff"
    status, headers, body = response(await call(static, "GET", "/browser/app.js"))
    assert (status, headers[b"content-type"]) == (200, b"text/javascript; charset=utf-8")
    assert body.startswith(b"import")
    module = "/browser/node_modules/centrifuge/build/index.mjs"
    status, headers, body = response(await call(static, "GET", module))
    assert (status, headers[b"content-type"], body) == (
        200,
        b"text/javascript; charset=utf-8",  # a module script runs only with a JavaScript type
        b"export {};\n",
    )
    status, _, body = response(await call(static, "GET", "/browser/docs/"))
    assert (status, body) == (200, b"<p>docs</p>")


async def test_head_answers_the_headers_alone(static: StaticFolder) -> None:
    status, headers, body = response(await call(static, "HEAD", "/browser/"))
    assert (status, headers[b"content-length"], body) == (200, str(len(PAGE)).encode(), b"")


async def test_a_folder_without_its_slash_is_redirected_to_it(static: StaticFolder) -> None:
    for path, location in (("/browser", b"browser/"), ("/browser/docs", b"docs/")):
        status, headers, _ = response(await call(static, "GET", path))
        assert (status, headers[b"location"]) == (307, location)  # relative: right under a proxy


@pytest.mark.parametrize(
    "path",
    [
        "/browser/missing.js",
        "/browser/.env",  # hidden
        "/browser/../secret.txt",  # out of the folder (a server passes it on decoded)
        "/browser/docs/../../secret.txt",
        "/browser/link.txt",  # a symbolic link out of the folder
        "/browser/out/",  # its index.html is one
        "/browser/env.txt",  # a symbolic link to a hidden file
        "/browser/app.js/x",
        "/browser/a\\..\\..\\secret.txt",
        "/browser/a\0.js",
    ],
)
async def test_what_is_not_a_file_of_the_folder_is_404(static: StaticFolder, path: str) -> None:
    status, _, body = response(await call(static, "GET", path))
    assert status == 404
    assert b"secret" not in body.lower()


async def test_other_methods_are_405(static: StaticFolder) -> None:
    status, headers, _ = response(await call(static, "POST", "/browser/app.js"))
    assert (status, headers[b"allow"]) == (405, b"GET, HEAD")


async def test_a_websocket_to_the_folder_is_refused_before_accept(folder: Path) -> None:
    client = ScriptedClient("/browser/app.js")
    await StaticFolder(folder)(client.scope, client.receive, client.send)
    assert client.sent_so_far() == [{"type": "websocket.close", "code": 1000, "reason": ""}]


def test_a_folder_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        StaticFolder(tmp_path / "nowhere")
