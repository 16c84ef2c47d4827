"""`StaticFolder`: a folder's files over HTTP, for a browser app on the service's own origin.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). A raw ASGI application, standard library only, mounted on a path prefix
by the app of either face (``app.mount("/browser", StaticFolder(folder))``): it serves
``<prefix>/<path>`` from ``<folder>/<path>``, the prefix being the scope's ``root_path``
(Starlette's ``Mount`` and `asgi_backend.Router.mount` both add theirs to it). A page
served this way is on the service's origin, so the guard's origin check lets its websockets
in and the browser sends them the service's cookies.

Everything in the folder is public, except names that start with a dot. Nothing outside
it is served: a path that leaves it (``..``, or a symbolic link to elsewhere) is 404.
"""

from __future__ import annotations

import asyncio
import mimetypes
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

from .asgi_types import Receive, Scope, Send

__all__ = ["StaticFolder"]

TYPES = {
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".mjs": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
}
"""Content types that must be right whatever the system's ``mimetypes`` table holds (a
browser runs a module script only with a JavaScript type); others come from that table."""

HEADERS = [
    (b"x-content-type-options", b"nosniff"),  # a file is only ever what its type says
    (b"cache-control", b"no-cache"),  # a new version is seen at once (no validators: small files)
]


class StaticFolder:
    """Answer ``GET`` and ``HEAD`` requests with the files of ``folder``.

    A folder's own path answers its ``index.html`` (without its last ``/``, a redirect to it,
    so that the page's relative links work); a missing or hidden file, 404; another method,
    405. A websocket handshake to the prefix is refused (HTTP 403, as for an
    unknown path). Files are read in a worker thread, whole: it serves the files of a
    browser app, not large downloads.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ValueError(f"{folder} is not a folder")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        path = _route_path(scope)
        file = self.file(path)
        if file is not None and file.is_dir():
            if not scope["path"].endswith("/"):  # relative, so right under any mount or proxy
                location = quote(scope["path"].rsplit("/", 1)[-1]) + "/"
                query = scope.get("query_string", b"")
                location += "?" + query.decode("latin-1") if query else ""
                await _respond(send, 307, b"", [(b"location", location.encode("latin-1"))])
                return
            file = self.file(path + "/index.html")
        body = None if file is None else await asyncio.to_thread(_read, file)
        if file is None or body is None:
            await _respond(send, 404, HTTPStatus(404).phrase.encode(), [], head=_head(scope))
            return
        kind = TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
        headers = [(b"content-type", (kind or "application/octet-stream").encode()), *HEADERS]
        await _respond(send, 200, body, headers, head=_head(scope))

    def file(self, path: str) -> Path | None:
        """The file that ``path`` (relative to the folder) names, or None when it names
        nothing that may be served."""
        parts = [part for part in path.split("/") if part]
        if any(part.startswith(".") or "\\" in part or "\0" in part for part in parts):
            return None  # hidden, or a way out (``..``)
        file = self.folder.joinpath(*parts).resolve()
        if not file.is_relative_to(self.folder):
            return None  # a symbolic link out of the folder
        if any(part.startswith(".") for part in file.relative_to(self.folder).parts):
            return None  # a symbolic link to a hidden file
        return file


def _route_path(scope: Scope) -> str:
    """The path under the mount: after ``root_path``, which the servers and ``Mount`` of
    today put at the start of ``path`` (as Starlette's ``get_route_path`` reads it)."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _read(file: Path) -> bytes | None:
    try:
        return file.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def _head(scope: Scope) -> bool:
    return bool(scope["method"] == "HEAD")


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool = False
) -> None:
    length = (b"content-length", str(len(body)).encode())
    if status != 200:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": [length, *headers]})
    await send({"type": "http.response.body", "body": b"" if head else body})
