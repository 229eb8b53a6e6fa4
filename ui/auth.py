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
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

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


class Throttle:
    """Per-client backoff of credential checks (login form, HTTP Basic, Bearer alike).

    After a failed check, that client's next check waits until ``delay`` has passed since it; checks
    that arrive meanwhile take the following slots, one ``delay`` apart, so parallel guesses wait in
    line as well: one client (one address; on loopback every local process is the same client) gets at
    most one guess per ``delay``. A correct password is never answered before its slot either, so
    guesses sent in parallel learn nothing sooner."""

    MAX_CLIENTS = 10_000  # forget expired entries beyond this many (bounded memory under address churn)

    def __init__(self, delay: float = FAILED_LOGIN_DELAY) -> None:
        self.delay = delay
        self._next: dict[str, float] = {}  # client -> earliest time of its next check
        self._lock = threading.Lock()

    async def check(self, client: str, attempt: Any) -> bool:
        """``attempt()`` (a cheap constant-time comparison) once this client's turn has come."""
        ok, wait = self._now_or_later(client, attempt)
        if ok is not None:
            return ok
        await asyncio.sleep(wait)
        with self._lock:
            return self._attempt(client, attempt)

    def _now_or_later(self, client: str, attempt: Any) -> tuple[bool | None, float]:
        """(result, 0) when the client may try now (checked under the lock, so parallel first guesses
        cannot slip through together), else (None, seconds to wait for the slot reserved for it)."""
        with self._lock:
            now = time.monotonic()
            if len(self._next) > self.MAX_CLIENTS:
                self._next = {c: t for c, t in self._next.items() if t > now}
            slot = self._next.get(client, 0.0)
            if slot <= now:
                return self._attempt(client, attempt), 0.0
            self._next[client] = slot + self.delay  # the slot after this one, for whoever comes next
            return None, slot - now

    def _attempt(self, client: str, attempt: Any) -> bool:
        ok = bool(attempt())
        if not ok:
            self._next[client] = max(self._next.get(client, 0.0), time.monotonic() + self.delay)
        return ok


class LoginMiddleware:
    """ASGI middleware: every HTTP and websocket request needs a session cookie or credentials."""

    def __init__(self, app: Any, login: Login, sessions: Sessions | None = None, api_prefix: str = "/v1/") -> None:
        self.app = app
        self.login = login
        self.sessions = sessions or Sessions()
        self.api_prefix = api_prefix
        self.throttle = Throttle()

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
        if await self._authenticated(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._refuse(scope, send)

    async def _authenticated(self, scope: dict) -> bool:
        if self.sessions.valid(_cookie(scope, SESSION_COOKIE)):
            return True
        header = _header(scope, b"authorization")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, word = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, word = "", ""  # malformed credentials are a failed guess like any other
            return await self._check(scope, user, word)
        if scheme.lower() == "bearer":
            return await self._check(scope, self.login.username, value.strip())
        return False

    async def _check(self, scope: dict, user: str, word: str) -> bool:
        """One credential check, throttled per client; a failure is answered after FAILED_LOGIN_DELAY."""
        ok = await self.throttle.check(_client(scope), lambda: self.login.check(user, word))
        if not ok:
            await asyncio.sleep(FAILED_LOGIN_DELAY)
        return ok

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
        if not await self._check(scope, user, word):
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
    """Only a same-origin path, else ``/`` (no open redirect): no control, format, separator or space
    characters anywhere (browsers drop tabs and newlines, so ``/\\t/evil.example`` would become
    ``//evil.example``), no ``//`` or backslash, no scheme or host once parsed. Non-ASCII characters are
    percent-encoded so the Location header stays ASCII."""
    if "\\" in target or any(unicodedata.category(ch)[0] in "CZ" for ch in target):
        return "/"
    target = quote(target, safe="/?&=%#:@!$'()*+,;~-._[]")
    parts = urlsplit(target)
    off_site = not target.startswith("/") or target.startswith("//") or bool(parts.scheme or parts.netloc)
    if off_site or target.startswith(LOGIN_PATH):
        return "/"
    return target


def _client(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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
