"""The `web` source: a fixed list of http(s) URLs, re-checked with conditional GETs.

Each URL is one document (doc_id = the URL). ``documents()`` revalidates every URL with its stored
ETag / Last-Modified: a 304 keeps the cached body, a 200 replaces it. Validators and bodies persist
in ``state_path`` (``state.json`` + one body file per URL, written atomically) so a restart does not
refetch unchanged pages as changed. A URL that fails is still listed, stamped ``error:<reason>``,
and ``fetch`` raises DocumentError saying why; a temporary failure (network error, 5xx, 408, 429)
of a URL fetched before keeps serving its cached body. HTML becomes text later, in the loaders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..atomic import write_atomic
from ..config import SourcesConfig
from ..errors import ConfigError, DocumentError
from ..paths import suffix_of
from ..types import DocumentRef, RawDocument
from .base import Change, Source

USER_AGENT = "footnotes/0.1"
_TYPE_SUFFIXES = {"text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
                  "text/markdown": ".md", "text/plain": ".txt"}
_PATH_SUFFIXES = {".md", ".markdown", ".rst", ".txt", ".pdf", ".docx", ".html", ".htm"}
_TRANSIENT_STATUS = {408, 425, 429}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Cached:
    """The validators and stamp of a URL's last good response (its body is stored beside them)."""

    etag: str
    last_modified: str
    stamp: str
    suffix: str


class _FetchFailed(Exception):
    def __init__(self, reason: str, message: str, transient: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient


@dataclass(frozen=True)
class WebSettings:
    urls: tuple[str, ...] = ()  # web pages to index; empty = none
    refresh_seconds: float = 3600.0  # how often the web source re-checks its URLs
    timeout_seconds: float = 20.0  # HTTP timeout of one fetch


class WebSource(Source):
    """Web pages (and PDFs, text files) at fixed http(s) URLs, kept up to date by conditional GETs."""

    kind = "web"
    Settings = WebSettings

    def __init__(self, urls: Sequence[str], timeout: float = 20.0, max_bytes: int = 50_000_000,
                 state_path: Path | None = None, refresh_seconds: float = 3600.0) -> None:
        if isinstance(urls, str):
            raise ConfigError("sources.web.urls must be a list of URLs, not one string: urls = [\"https://...\"]")
        for url in urls:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"sources.web.urls: {url!r} is not an http:// or https:// URL; only web pages "
                                  "can be fetched (index local files with the folder source)")
        if timeout <= 0 or max_bytes <= 0 or refresh_seconds <= 0:
            raise ConfigError("sources.web.timeout_seconds, sources.max_file_bytes and "
                              "sources.web.refresh_seconds must be greater than 0")
        self.urls = tuple(dict.fromkeys(urls))
        self.timeout, self.max_bytes, self.refresh_seconds = timeout, max_bytes, refresh_seconds
        self.state_path = Path(state_path) if state_path is not None else None
        self._cached: dict[str, _Cached] = {}
        self._bodies: dict[str, bytes] = {}  # only without a state_path
        self._errors: dict[str, str] = {}  # url -> DocumentError message
        self._lock = threading.RLock()
        self._opener = urllib.request.OpenerDirector()  # http(s) only, even across redirects
        for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                        urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                        urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                        urllib.request.HTTPErrorProcessor()):
            self._opener.add_handler(handler)
        self._load_state()

    @classmethod
    def from_config(cls, config: SourcesConfig, data_dir: Path, folder: str | Path | None) -> WebSource | None:
        settings = config.settings_for(cls)
        if not settings.urls:
            return None
        return cls(settings.urls, timeout=settings.timeout_seconds, max_bytes=config.max_file_bytes,
                   state_path=Path(data_dir) / "web", refresh_seconds=settings.refresh_seconds)

    def describe(self) -> str:
        return f"{len(self.urls)} URL{'s' if len(self.urls) != 1 else ''}"

    def documents(self) -> Iterator[DocumentRef]:
        for url in self.urls:
            yield DocumentRef(url, self._refresh(url))

    def fetch(self, doc_id: str) -> RawDocument:
        if doc_id not in self.urls:
            raise DocumentError(f"{doc_id} is not one of this web source's URLs (sources.web.urls in config.toml)")
        with self._lock:
            known = doc_id in self._cached or doc_id in self._errors
        if not known:
            self._refresh(doc_id)
        with self._lock:
            if doc_id in self._errors:
                raise DocumentError(self._errors[doc_id])
            entry = self._cached[doc_id]
            return RawDocument(doc_id, self._read_body(doc_id), entry.suffix, entry.stamp)

    def watch(self, on_change: Callable[[Change], None], stop: threading.Event,
              interval: float | None = None) -> None:
        """Poll every ``refresh_seconds`` (sources.web.refresh_seconds) unless ``interval`` is given."""
        super().watch(on_change, stop, self.refresh_seconds if interval is None else interval)

    def _refresh(self, url: str) -> str:
        """Revalidate one URL and return its stamp (``error:<reason>`` when it has no usable body)."""
        with self._lock:
            cached = self._cached.get(url)
        try:
            got = self._get(url, cached)
        except _FetchFailed as exc:
            with self._lock:
                if exc.transient and cached is not None:
                    log.warning("%s; serving the copy fetched before", exc.message)
                    self._errors.pop(url, None)
                    return cached.stamp
                self._forget(url)
                self._errors[url] = exc.message
                return f"error:{exc.reason}"
        with self._lock:
            self._errors.pop(url, None)
            if got is None:  # 304 Not Modified
                return cached.stamp
            body, headers = got
            etag, modified = headers.get("ETag", ""), headers.get("Last-Modified", "")
            stamp = etag or modified or "sha256:" + hashlib.sha256(body).hexdigest()
            self._cached[url] = _Cached(etag, modified, stamp, _suffix(url, headers.get("Content-Type", "")))
            self._write_body(url, body)
            self._save_state()
            return stamp

    def _get(self, url: str, cached: _Cached | None) -> tuple[bytes, http.client.HTTPMessage] | None:
        """GET ``url``, conditional on ``cached``'s validators; None on 304, _FetchFailed on failure."""
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if cached is not None and cached.etag:
            request.add_header("If-None-Match", cached.etag)
        if cached is not None and cached.last_modified:
            request.add_header("If-Modified-Since", cached.last_modified)
        too_large = _FetchFailed("too-large", f"{url} is larger than {self.max_bytes} bytes, the limit set by "
                                 "sources.max_file_bytes in config.toml: raise the limit or remove the URL "
                                 "from sources.web.urls", transient=False)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                if int(response.headers.get("Content-Length") or 0) > self.max_bytes:
                    raise too_large
                body = response.read(self.max_bytes + 1)
                headers = response.headers
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304 and cached is not None:
                return None
            raise _FetchFailed(f"HTTP {exc.code}", f"could not fetch {url}: the server answered HTTP {exc.code} "
                               f"{exc.reason}; check the URL, or remove it from sources.web.urls in config.toml",
                               transient=exc.code >= 500 or exc.code in _TRANSIENT_STATUS) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = _network_reason(exc)
            raise _FetchFailed(reason, f"could not fetch {url}: {reason} ({exc}); check the URL and that the "
                               "server is reachable (sources.web.urls in config.toml; the timeout is "
                               "sources.web.timeout_seconds)", transient=True) from None
        if len(body) > self.max_bytes:
            raise too_large
        return body, headers

    # --- the cache: in memory, or in state_path (state.json + <sha256(url)>.body files) ---

    def _body_file(self, url: str) -> Path:
        return self.state_path / (hashlib.sha256(url.encode()).hexdigest() + ".body")

    def _read_body(self, url: str) -> bytes:
        if self.state_path is None:
            return self._bodies[url]
        try:
            return self._body_file(url).read_bytes()
        except OSError as exc:
            self._forget(url)
            raise DocumentError(f"the cached copy of {url} is unreadable ({exc}); it is refetched "
                                f"at the next sync (the cache is {self.state_path})") from None

    def _write_body(self, url: str, body: bytes) -> None:
        if self.state_path is None:
            self._bodies[url] = body
        else:
            write_atomic(self._body_file(url), body)

    def _forget(self, url: str) -> None:
        if self._cached.pop(url, None) is not None:
            self._bodies.pop(url, None)
            if self.state_path is not None:
                self._body_file(url).unlink(missing_ok=True)
                self._save_state()

    def _save_state(self) -> None:
        if self.state_path is not None:
            state = {"version": 1, "entries": {u: dataclasses.asdict(c) for u, c in self._cached.items()}}
            write_atomic(self.state_path / "state.json", json.dumps(state, indent=1).encode())

    def _load_state(self) -> None:
        if self.state_path is None:
            return
        self.state_path.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads((self.state_path / "state.json").read_text("utf-8"))["entries"]
            for url, fields in entries.items():
                if url in self.urls and self._body_file(url).is_file():
                    self._cached[url] = _Cached(**fields)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable web cache in %s (%s): every URL is refetched", self.state_path, exc)
            self._cached.clear()
        kept = {self._body_file(url).name for url in self._cached}
        for orphan in self.state_path.glob("*.body"):  # URLs no longer configured, or an unreadable state
            if orphan.name not in kept:
                orphan.unlink(missing_ok=True)


def _suffix(url: str, content_type: str) -> str:
    """The file type: from an HTML/PDF/Markdown Content-Type, else the URL's extension, else the type."""
    by_type = _TYPE_SUFFIXES.get(content_type.split(";")[0].strip().lower(), "")
    if by_type in (".html", ".pdf", ".md"):
        return by_type
    by_path = suffix_of(urlsplit(url).path)
    if by_path in _PATH_SUFFIXES:
        return ".html" if by_path == ".htm" else by_path
    return by_type or ".html"


def _network_reason(exc: BaseException) -> str:
    """A short, stable reason for a network failure (used in the ``error:<reason>`` stamp)."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    return cause if isinstance(cause, str) else type(cause).__name__
