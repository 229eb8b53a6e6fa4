"""The CLI talks to a running `footnotes serve` on the same data dir (as the ollama CLI talks to its
server), instead of loading a second copy of the models.

`footnotes serve` announces itself in ``<data dir>/server.json`` (its URL and process id, written
atomically once it listens, removed when it stops). A command finds it there; a file whose process
is gone, a URL that is not on this machine, or a server that does not answer is ignored, and the
command answers by itself.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from knowledge.atomic import write_atomic

SERVER_FILE = "server.json"
TIMEOUT_SECONDS = 30.0
log = logging.getLogger(__name__)


def announce(data_dir: Path, url: str) -> Callable[[], None]:
    """Record that this process serves ``data_dir`` at ``url``; returns what withdraws it."""
    path = Path(data_dir) / SERVER_FILE
    write_atomic(path, json.dumps({"url": url, "pid": os.getpid()}).encode())

    def withdraw() -> None:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():  # not a newer server's file
                path.unlink()
        except (OSError, ValueError):
            pass

    return withdraw


def running_server(data_dir: Path) -> str | None:
    """The URL of a live `footnotes serve` of ``data_dir`` on this machine, or None."""
    try:
        entry = json.loads((Path(data_dir) / SERVER_FILE).read_text())
        url, pid = str(entry["url"]), int(entry["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1") or not _alive(pid):
        return None
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, but not ours to use
        return False
    return True


class ServerClient:
    """JSON requests to a running server (with the configured login, if any)."""

    def __init__(self, url: str, username: str = "", password: str = "") -> None:
        self.url = url.rstrip("/") + "/"
        username = os.environ.get("FOOTNOTES_USERNAME", username)
        password = os.environ.get("FOOTNOTES_PASSWORD", password)
        token = base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Basic {token}"} if token else {})}

    def get(self, path: str) -> Any:
        return self._request(urllib.request.Request(self.url + path, headers=self.headers))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request(urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                                    headers=self.headers, method="POST"))

    def _request(self, request: urllib.request.Request) -> Any:
        """The JSON answer; None when the server cannot be asked (then the command answers itself)."""
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - loopback only
                return json.loads(response.read())
        except (OSError, ValueError) as exc:  # refused, timed out, an error status, not JSON
            log.info("the server at %s did not answer (%s); answering here", self.url, exc)
            return None


def client_for(ctx) -> ServerClient | None:
    """A client of the server running on this command's data dir, or None."""
    url = running_server(ctx.data_dir)
    if url is None:
        return None
    server = ctx.config.server
    return ServerClient(url, server.username, server.password)
