"""One ASGI app: the HTTP API under ``/v1``, the Gradio page at ``/``, and the optional login in front
of both. :func:`serve` runs it with uvicorn while the watcher threads keep the indexes in step."""

from __future__ import annotations

import ipaddress
import socket
import logging
import sys
import threading
from typing import Any

from fastapi import FastAPI

from knowledge.errors import ConfigError, FootnotesError

from .api import api_router, install_error_handlers
from .auth import Login, LoginMiddleware
from .guards import LOOPBACK_NAMES, BodyLimit, SameOriginGuard
from .render import CSS
from .service import Service

log = logging.getLogger(__name__)


def create_app(service: Service, login: Login | None = None, with_ui: bool = True,
               allowed_hosts: tuple[str, ...] | None = None, max_request_bytes: int = 1_048_576) -> FastAPI:
    """The FastAPI app; ``with_ui=False`` leaves the Gradio page out (API-only tests).
    ``allowed_hosts`` limits the Host header (DNS-rebinding guard; None = any); ``max_request_bytes``
    bounds every request body but uploads (which have their own limits)."""
    app = FastAPI(title="Footnotes", docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json")
    install_error_handlers(app)
    app.include_router(api_router(service))
    if with_ui:
        try:
            import gradio as gr
        except ImportError:
            raise FootnotesError("the web UI needs gradio: pip install 'gradio>=6' (or run the API only)") from None

        from .app import build_blocks

        blocks = build_blocks(service)
        blocks.queue(default_concurrency_limit=4, max_size=64)
        app = gr.mount_gradio_app(app, blocks, path="/", server_name="127.0.0.1", footer_links=[],
                                  max_file_size=service.max_upload_bytes, ssr_mode=False, mcp_server=False,
                                  pwa=False, css=CSS, show_error=True)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    if login is not None:
        app.add_middleware(LoginMiddleware, login=login)
    app.add_middleware(SameOriginGuard, allowed_hosts=allowed_hosts)  # outermost: runs first
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail early, with what to do, when the address is taken (before the generator is loaded)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using it? "
                              "pass --port N (or --port 0 for any free port)") from None


def serve(app: Any, host: str, port: int, on_started: Any = None) -> None:
    """Run uvicorn until Ctrl-C; ``on_started(url)`` is called once the socket listens (port 0 = any free port)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        sockets = [s for srv in getattr(server, "servers", []) for s in srv.sockets]
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/"
        if on_started:
            on_started(url)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    server.run()


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """Loopback binds accept loopback host names only; other binds any (the user chose to expose it)."""
    return LOOPBACK_NAMES if is_loopback(host) else None


def warn(message: str) -> None:
    print(f"footnotes: warning: {message}", file=sys.stderr, flush=True)
