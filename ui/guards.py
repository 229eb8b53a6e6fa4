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
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": "forbidden"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
