"""The `web` source against a real HTTP server on 127.0.0.1 (never the network)."""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from knowledge.errors import ConfigError, DocumentError
from knowledge.registry import load_plugin
from knowledge.sources.base import Change
from knowledge.sources.web import WebSource


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    validator: str = "etag"  # "etag", "last-modified" or "none"
    status: int = 200
    version: int = 1  # the Last-Modified time, in seconds since the epoch
    location: str = ""  # a redirect target, with status 302


class Site:
    """What the server serves, and a log of (path, request headers, status replied)."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.log: list[tuple[str, dict[str, str], int]] = []
        self.release = threading.Event()  # ends the /slow page's wait

    def requests(self, path: str) -> list[tuple[dict[str, str], int]]:
        return [(headers, status) for p, headers, status in self.log if p == path]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        site: Site = self.server.site  # type: ignore[attr-defined]
        headers = dict(self.headers)
        if self.path == "/slow":
            site.release.wait(5)
        if self.path == "/endless":  # no Content-Length, never ends: the client must stop reading
            site.log.append((self.path, headers, 200))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for _ in range(2000):  # at most 128 MB
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass
            return
        page = site.pages.get(self.path)
        status, validators = (404, {}) if page is None else (page.status, _validators(page))
        if page is not None and status == 200 and _not_modified(headers, validators):
            status = 304
        site.log.append((self.path, headers, status))
        self.send_response(status)
        for name, value in validators.items():
            self.send_header(name, value)
        if page is not None and page.location:
            self.send_header("Location", page.location)
        body = b"" if status == 304 else (page.body if page is not None else b"not found")
        if status != 304:
            self.send_header("Content-Type", page.content_type if page else "text/plain")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _validators(page: Page) -> dict[str, str]:
    if page.validator == "etag":
        return {"ETag": '"' + hashlib.sha256(page.body).hexdigest()[:16] + '"'}
    if page.validator == "last-modified":
        return {"Last-Modified": email.utils.formatdate(page.version, usegmt=True)}
    return {}


def _not_modified(request: dict[str, str], validators: dict[str, str]) -> bool:
    if "ETag" in validators:
        return request.get("If-None-Match") == validators["ETag"]
    if "Last-Modified" in validators:
        return request.get("If-Modified-Since") == validators["Last-Modified"]
    return False


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site():
    site = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.site = site  # type: ignore[attr-defined]
    site.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield site
    site.release.set()
    server.shutdown()
    server.server_close()


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def _stamps(source: WebSource) -> dict[str, str]:
    return {ref.doc_id: ref.stamp for ref in source.documents()}


def test_first_fetch_then_conditional_get_returns_304_and_same_stamp(site):
    site.pages["/a"] = Page(b"<html><body>Hello</body></html>")
    url = site.base + "/a"
    source = WebSource([url])
    first = _stamps(source)[url]
    raw = source.fetch(url)
    assert (raw.doc_id, raw.data, raw.suffix, raw.stamp) == (url, b"<html><body>Hello</body></html>", ".html", first)
    assert first.startswith('"')  # the ETag
    assert _stamps(source)[url] == first
    (h1, s1), (h2, s2) = site.requests("/a")
    assert s1 == 200 and "If-None-Match" not in h1 and h1["User-Agent"] == "footnotes/0.1"
    assert h2["If-None-Match"] == first and s2 == 304
    assert source.fetch(url).data == b"<html><body>Hello</body></html>"


def test_changed_content_changes_etag_and_stamp(site):
    site.pages["/a"] = Page(b"version one")
    url = site.base + "/a"
    source = WebSource([url])
    before = _stamps(source)[url]
    site.pages["/a"] = Page(b"version two")
    after = _stamps(source)[url]
    assert after != before and site.requests("/a")[-1][1] == 200
    assert source.fetch(url).data == b"version two" and source.fetch(url).stamp == after


def test_last_modified_only_server(site):
    site.pages["/lm"] = Page(b"plain words", content_type="text/plain", validator="last-modified", version=1000)
    url = site.base + "/lm"
    source = WebSource([url])
    stamp = _stamps(source)[url]
    assert stamp == email.utils.formatdate(1000, usegmt=True)
    assert _stamps(source)[url] == stamp
    headers, status = site.requests("/lm")[-1]
    assert headers["If-Modified-Since"] == stamp and "If-None-Match" not in headers and status == 304
    assert source.fetch(url).suffix == ".txt"
    site.pages["/lm"] = Page(b"new words", content_type="text/plain", validator="last-modified", version=2000)
    assert _stamps(source)[url] != stamp and source.fetch(url).data == b"new words"


def test_no_validators_stamp_is_sha256_of_body(site):
    site.pages["/doc.md"] = Page(b"# Title", content_type="text/plain", validator="none")
    url = site.base + "/doc.md"
    source = WebSource([url])
    assert _stamps(source)[url] == "sha256:" + hashlib.sha256(b"# Title").hexdigest()
    assert source.fetch(url).suffix == ".md"  # text/plain: the URL's extension decides


def test_failing_urls_do_not_stop_the_others(site):
    site.pages["/ok"] = Page(b"fine")
    ok, missing, refused = site.base + "/ok", site.base + "/missing", _refused_url()
    source = WebSource([missing, refused, ok])
    stamps = _stamps(source)
    assert list(stamps) == [missing, refused, ok]
    assert stamps[missing] == "error:HTTP 404" and stamps[refused] == "error:connection refused"
    assert source.fetch(ok).data == b"fine"
    with pytest.raises(DocumentError, match=r"/missing.*HTTP 404.*sources\.web\.urls"):
        source.fetch(missing)
    with pytest.raises(DocumentError, match=r"/gone.*connection refused.*sources\.web\.urls"):
        source.fetch(refused)


def test_timeout_is_an_error_naming_the_setting(site):
    url = site.base + "/slow"
    source = WebSource([url], timeout=0.3)
    assert _stamps(source)[url] == "error:timed out"
    with pytest.raises(DocumentError, match=r"sources\.web\.timeout_seconds"):
        source.fetch(url)


def test_temporary_failure_keeps_the_cached_body(site):
    site.pages["/a"] = Page(b"kept")
    url = site.base + "/a"
    source = WebSource([url])
    stamp = _stamps(source)[url]
    site.pages["/a"] = Page(b"broken", status=503)
    assert _stamps(source)[url] == stamp
    assert source.fetch(url).data == b"kept"
    site.pages.pop("/a")  # now a 404: the page is gone for good
    assert _stamps(source)[url] == "error:HTTP 404"
    with pytest.raises(DocumentError):
        source.fetch(url)


def test_oversized_bodies_are_refused(site):
    site.pages["/big"] = Page(b"x" * 1000)
    big, endless = site.base + "/big", site.base + "/endless"
    source = WebSource([big, endless], max_bytes=100)
    assert _stamps(source) == {big: "error:too-large", endless: "error:too-large"}
    for url in (big, endless):
        with pytest.raises(DocumentError, match=r"100 bytes.*sources\.max_file_bytes"):
            source.fetch(url)


def test_state_persists_across_instances(site, tmp_path):
    site.pages["/a"] = Page(b"<p>persisted</p>")
    site.pages["/b"] = Page(b"b", validator="last-modified")
    urls = [site.base + "/a", site.base + "/b"]
    before = _stamps(WebSource(urls, state_path=tmp_path / "web"))
    state = json.loads((tmp_path / "web" / "state.json").read_text())
    assert set(state["entries"]) == set(urls)
    again = WebSource(urls, state_path=tmp_path / "web")
    assert _stamps(again) == before
    assert [status for _, status in site.requests("/a")] == [200, 304]
    assert [status for _, status in site.requests("/b")] == [200, 304]
    assert again.fetch(urls[0]).data == b"<p>persisted</p>"
    smaller = WebSource(urls[:1], state_path=tmp_path / "web")  # a URL removed from the config
    assert len(list((tmp_path / "web").glob("*.body"))) == 1 and smaller.fetch(urls[0]).stamp == before[urls[0]]


def test_redirects_are_followed_only_to_http(site):
    site.pages["/target"] = Page(b"moved here")
    site.pages["/moved"] = Page(b"", status=302, location="/target")
    site.pages["/to-file"] = Page(b"", status=302, location="file:///etc/passwd")
    moved, to_file = site.base + "/moved", site.base + "/to-file"
    source = WebSource([moved, to_file])
    assert _stamps(source)[to_file].startswith("error:")
    assert source.fetch(moved).data == b"moved here"
    with pytest.raises(DocumentError, match="to-file"):
        source.fetch(to_file)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "example.org/page", "http://"])
def test_bad_scheme_is_a_config_error(url):
    with pytest.raises(ConfigError, match=r"sources\.web\.urls.*http://"):
        WebSource([url])


def test_watch_polls_every_refresh_seconds(site):
    site.pages["/a"] = Page(b"one")
    source = WebSource([site.base + "/a"], refresh_seconds=0.05)
    changes: list[Change] = []
    stop = threading.Event()
    thread = threading.Thread(target=source.watch, args=(changes.append, stop), daemon=True)
    thread.start()
    while not site.requests("/a"):  # the first listing is taken
        stop.wait(0.01)
    site.pages["/a"] = Page(b"two")
    for _ in range(100):
        if changes:
            break
        stop.wait(0.05)
    stop.set()
    thread.join(5)
    assert changes and changes[0] == Change(everything=True)


def test_registered_as_the_web_source():
    assert load_plugin("footnotes.sources", "web") is WebSource
    assert WebSource.kind == "web"
