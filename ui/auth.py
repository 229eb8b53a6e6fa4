"""Optional login guarding every route: the web page, Gradio's own routes and the HTTP API alike.

Credentials come from ``[server] username/password`` or ``$FOOTNOTES_USERNAME/$FOOTNOTES_PASSWORD``.
A browser logs in on ``/login`` and gets an HttpOnly, SameSite=Strict session cookie (sessions live
in memory: a restart logs everyone out). API clients send HTTP Basic credentials, or the password
as a Bearer token (what OpenAI clients send as their API key). Without valid credentials, API and
background requests get 401 JSON, and page requests a redirect to the login form.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from knowledge.errors import ConfigError

SESSION_COOKIE = "footnotes_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
FAILED_LOGIN_DELAY = 0.5  # seconds added to every failed attempt (slows password guessing)
MAX_FORM_BYTES = 4096


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    @classmethod
    def from_settings(cls, username: str, password: str, environ: dict[str, str] | None = None) -> Login | None:
        """The login to require, or None when none is configured. Environment variables win."""
        env = os.environ if environ is None else environ
        user = env.get("FOOTNOTES_USERNAME") or username
        word = env.get("FOOTNOTES_PASSWORD") or password
        if not user and not word:
            return None
        if not (user and word):
            raise ConfigError("login needs both a username and a password: set [server] username and password "
                              "(or $FOOTNOTES_USERNAME and $FOOTNOTES_PASSWORD), or neither to run without login")
        return cls(user, word)

    def check(self, username: str, password: str) -> bool:
        a = hmac.compare_digest(username.encode(), self.username.encode())
        b = hmac.compare_digest(password.encode(), self.password.encode())
        return a and b


class Sessions:
    """Session tokens of logged-in browsers, in memory."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def new(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            return any(hmac.compare_digest(token, t) for t in self._tokens)

    def end(self, token: str | None) -> None:
        with self._lock:
            self._tokens.discard(token or "")


class LoginMiddleware:
    """ASGI middleware: every HTTP and websocket request needs a session cookie or credentials."""

    def __init__(self, app: Any, login: Login, sessions: Sessions | None = None, api_prefix: str = "/v1/") -> None:
        self.app = app
        self.login = login
        self.sessions = sessions or Sessions()
        self.api_prefix = api_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and path == LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        if scope["type"] == "http" and path == LOGOUT_PATH:
            self.sessions.end(_cookie(scope, SESSION_COOKIE))
            await _respond(send, 303, b"", [(b"location", LOGIN_PATH.encode()), _clear_cookie()])
            return
        if self._authenticated(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._refuse(scope, send)

    def _authenticated(self, scope: dict) -> bool:
        if self.sessions.valid(_cookie(scope, SESSION_COOKIE)):
            return True
        header = _header(scope, b"authorization")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, word = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.login.check(user, word)
        if scheme.lower() == "bearer":
            return self.login.check(self.login.username, value.strip())
        return False

    async def _refuse(self, scope: dict, send: Any) -> None:
        path = scope.get("path", "")
        wants_page = scope.get("method") == "GET" and "text/html" in _header(scope, b"accept")
        if wants_page and not path.startswith(self.api_prefix):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            await _respond(send, 303, b"", [(b"location", f"{LOGIN_PATH}?next={quote(target)}".encode())])
            return
        body = json.dumps({"error": {
            "message": "login required: send HTTP Basic credentials (or the password as a Bearer token), "
                       f"or log in at {LOGIN_PATH}",
            "type": "authentication_error", "code": "login_required"}}).encode()
        await _respond(send, 401, body, [(b"content-type", b"application/json"),
                                         (b"www-authenticate", b'Basic realm="footnotes", charset="UTF-8"')])

    async def _login(self, scope: dict, receive: Any, send: Any) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = _safe_next(query.get("next", ["/"])[0])
        if scope.get("method") != "POST":
            await _respond(send, 200, login_page(target).encode(), [(b"content-type", b"text/html; charset=utf-8")])
            return
        form = parse_qs((await _read_body(receive, MAX_FORM_BYTES)).decode("utf-8", errors="replace"))
        user = form.get("username", [""])[0]
        word = form.get("password", [""])[0]
        target = _safe_next(form.get("next", [target])[0])
        if not self.login.check(user, word):
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            page = login_page(target, "Wrong username or password.").encode()
            await _respond(send, 401, page, [(b"content-type", b"text/html; charset=utf-8")])
            return
        token = self.sessions.new()
        cookie = f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
        await _respond(send, 303, b"", [(b"location", target.encode()), (b"set-cookie", cookie)])


def login_page(target: str, message: str = "") -> str:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Footnotes — log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;background:#f6f6f4}}
form{{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002;min-width:18rem}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.5rem;box-sizing:border-box}}
button{{margin-top:1.2rem;padding:.5rem 1.2rem}}.error{{color:#a00}}</style></head>
<body><form method="post" action="{LOGIN_PATH}"><h1>Footnotes</h1>{note}
<input type="hidden" name="next" value="{html.escape(target)}">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<button type="submit">Log in</button></form></body></html>"""


def _safe_next(target: str) -> str:
    """Only same-site paths: never an absolute or protocol-relative URL (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or target.startswith(LOGIN_PATH):
        return "/"
    return target


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _cookie(scope: dict, name: str) -> str | None:
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _clear_cookie() -> tuple[bytes, bytes]:
    return b"set-cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict".encode()


async def _read_body(receive: Any, limit: int) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit or not message.get("more_body"):
            return body[:limit]


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
