"""A real `chroma run` server on 127.0.0.1: start it on a free port, wait for its heartbeat, stop it.

    python scripts/chroma_server.py run [--port P] [--path DIR] [-- COMMAND ...]

starts the server, prints its URL, runs COMMAND with FOOTNOTES_TEST_CHROMA=<url> in its environment
(or, without a command, serves until Ctrl-C), then stops the server and exits with COMMAND's code.
`make test` uses it to run the knowledge tests against a server; tests/test_chroma_server.py uses
``ChromaServer`` to kill one and bring it back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ENV = "FOOTNOTES_TEST_CHROMA"  # the URL the test fixtures point the dense index at


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def chroma_command() -> str:
    """The `chroma` CLI of this interpreter's environment (the chromadb package installs it)."""
    beside = Path(sys.executable).parent / "chroma"
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if not found:
        raise RuntimeError("no `chroma` command: install the chromadb package (`make install`)")
    return found


class ChromaServer:
    """One `chroma run` process serving ``path`` on ``host:port``; start() returns once it answers."""

    def __init__(self, path: str | Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.path = Path(path)
        self.host = host
        self.port = port or free_port(host)
        self.log = self.path.parent / f"{self.path.name}-chroma-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ChromaServer:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.answers():
            raise RuntimeError(f"something already answers on {self.url}: choose another port")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [chroma_command(), "run", "--host", self.host, "--port", str(self.port), "--path", str(self.path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Chroma server on {self.url} did not start; its log ({self.log}):\n{tail}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        """True if the server's heartbeat endpoint answers (no proxy: it is on this machine)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url}/api/v2/heartbeat", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: the server vanishes mid-whatever, as in a crash."""
        self._signal(signal.SIGKILL, 10.0)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 10.0)
        if self.proc is not None:
            self.kill()

    def _signal(self, sig: int, wait: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(wait)
            self.proc = None
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start a server, run COMMAND against it (or serve until Ctrl-C), stop it")
    run.add_argument("--port", type=int, default=None, help="default: a free port")
    run.add_argument("--path", default=None, help="the server's data folder; default: a temporary one, deleted after")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory(prefix="chroma-server-") as tmp:
        server = ChromaServer(args.path or Path(tmp) / "chroma", args.port)
        started = time.monotonic()
        with server:
            print(f"Chroma server {server.url} (data {server.path}) answered after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            if not command:
                try:
                    server.proc.wait()
                except KeyboardInterrupt:
                    pass
                return 0
            return subprocess.call(command, env={**os.environ, ENV: server.url})


if __name__ == "__main__":
    sys.exit(main())
