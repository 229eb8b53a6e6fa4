"""`footnotes serve`: the web page and the HTTP API in one process, with the watcher running."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from knowledge.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the web UI and the HTTP API (127.0.0.1 by default)")
    p.add_argument("--knowledge", metavar="DIR", help="the knowledge folder (default: [sources.folder] path or the last ingested)")
    p.add_argument("--host", help="bind address (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: server.port, 7860; 0 = any free port)")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args, ctx) -> int:
    from assistant.generator import Generator
    from knowledge.kb import KnowledgeBase
    from knowledge.progress import TqdmProgress
    from ui.auth import Login
    from ui.server import allowed_hosts_for, check_port, create_app, is_loopback, serve, warn
    from ui.server_link import announce
    from ui.service import Service

    server_cfg = ctx.config.server
    host = args.host or server_cfg.host
    port = server_cfg.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: use a port between 0 and 65535")
    if args.knowledge and not Path(args.knowledge).is_dir():
        raise ConfigError(f"--knowledge {args.knowledge}: no such folder; create it or pass another")
    check_port(host, port)
    login = Login.from_settings(server_cfg.username, server_cfg.password)
    if not is_loopback(host) and login is None:
        warn(f"serving on {host} without a login: anyone who can reach this address can read your documents; "
             "set [server] username/password or $FOOTNOTES_USERNAME/$FOOTNOTES_PASSWORD")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(ctx.data_dir) / "upload-cache"))

    progress = TqdmProgress()
    kb = KnowledgeBase.open(ctx.config.knowledge, ctx.data_dir, folder=args.knowledge, write=True, progress=progress)
    progress.close()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    withdraw: list = []
    try:
        if not kb.writable_sources():
            warn("no knowledge folder: pass --knowledge DIR (uploads need one)")
        assistant = ctx.config.assistant
        print("footnotes: loading the generator…", file=sys.stderr, flush=True)
        generator = Generator.from_config(assistant.generator)
        service = Service(kb, generator, assistant.answer, server_cfg.max_upload_bytes, knn=assistant.knn,
                          max_question_chars=server_cfg.max_question_chars,
                          max_question_tokens=server_cfg.max_question_tokens,
                          parallel_answers=server_cfg.parallel_answers, batch_rows=server_cfg.batch_rows,
                          batch_gather_ms=server_cfg.batch_gather_ms)
        threads = kb.watch(stop, on_report=service.record)  # catches up with the folder first, then follows it
        app = create_app(service, login, allowed_hosts=allowed_hosts_for(host),
                         max_request_bytes=server_cfg.max_request_bytes)
        def started(url: str) -> None:
            withdraw.append(announce(ctx.data_dir, url))  # `footnotes search`/`status` answer through it
            where = f" over {kb.describe()}" if kb.sources else ""
            print(f"footnotes: serving{where} at {url} (API at {url}v1/; Ctrl-C stops)"
                  + (" — login required" if login else ""), file=sys.stderr, flush=True)

        serve(app, host, port, started)
        return 0
    finally:
        for w in withdraw:
            w()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        kb.close()
