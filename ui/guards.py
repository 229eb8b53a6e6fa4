"""Guards against other web sites the user visits while Footnotes runs on their machine.

- Cross-site writes: a page elsewhere can make the browser POST a multipart form (a "simple"
  request, no CORS preflight) to 127.0.0.1, e.g. to drop files into the knowledge folder. Browsers
  send an ``Origin`` header with such requests: one that is not this server's own is refused.
- DNS rebinding: a hostile name that resolves to 127.0.0.1 would let a page read the API as if it
  were same-origin. When serving on a loopback address only loopback host names are accepted.

Clients that are not browsers (curl, the OpenAI SDK) send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class SameOriginGuard:
    """ASGI middleware. ``allowed_hosts``: host names accepted in the Host header (None = any)."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            await _refuse(scope, send, 403, f"host name {host!r} is not served here; open Footnotes at "
                                            "http://127.0.0.1 or http://localhost")
            return
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if unsafe and origin and origin != "null" and urlsplit(origin).netloc.lower() != host.lower():
            await _refuse(scope, send, 403, f"cross-site request from {origin} refused")
            return
        if unsafe and origin == "null":
            await _refuse(scope, send, 403, "request from an opaque origin refused")
            return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(scope: dict, send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    code = "forbidden" if status == 403 else "request_too_large"
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body other than a multipart upload (which has its own limits) may be at
    most ``max_bytes``. A larger Content-Length is refused before anything is read (the server holds
    the client to its Content-Length); a body sent without one (chunked) is read up to the limit
    first and refused as soon as it passes it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _is_multipart(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _refuse(scope, send, 413, self._message(f"{length} bytes"))
            return
        if length is None and "chunked" in (_header(scope, b"transfer-encoding") or "").lower():
            body = await self._read_bounded(receive)
            if body is None:
                await _refuse(scope, send, 413, self._message(f"more than {self.max_bytes:,} bytes"))
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_bounded(self, receive: Any) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body)
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return None
            if not message.get("more_body"):
                return bytes(body)

    def _message(self, size: str) -> str:
        return (f"the request body is {size}, over the limit of {self.max_bytes:,} bytes; send less "
                "(or raise server.max_request_bytes in config.toml)")


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that hands out ``body`` once, then the server's own messages (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()
    return replayed


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _is_multipart(scope: dict) -> bool:
    return (_header(scope, b"content-type") or "").lower().startswith("multipart/form-data")
