"""Login: with a username and password set, every page, Gradio route and API route refuses an
unauthenticated request; a browser session cookie, HTTP Basic or a Bearer password let it in."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route, WebSocketRoute

from knowledge.errors import ConfigError
from ui.auth import SESSION_COOKIE, Login
from ui.server import create_app
from tests.ui_fixtures import make_service

USER, PASSWORD = "ada", "correct horse battery staple"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("auth"))
    yield create_app(svc, Login(USER, PASSWORD), with_ui=True)
    svc.kb.close()


@pytest.fixture
def anonymous(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


def basic(user: str, word: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{word}".encode()).decode()}


def all_paths(app) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route, Gradio's mounted ones included, path parameters filled in."""
    out = []

    def walk(routes, prefix: str) -> None:
        for r in routes:
            if isinstance(r, Mount):
                walk(r.routes, prefix + r.path)
            elif hasattr(r, "original_router"):  # FastAPI's included router: its routes carry their full path
                walk(r.original_router.routes, prefix)
            elif isinstance(r, Route) and not isinstance(r, WebSocketRoute):
                path = re.sub(r"\{[^}]+\}", "x", prefix + r.path) or "/"
                for method in sorted(r.methods or {"GET"}):
                    if method != "HEAD":
                        out.append((method, path))
    walk(app.routes, "")
    return out


def test_every_route_refuses_an_unauthenticated_request(app, anonymous) -> None:
    routes = all_paths(app)
    assert len(routes) > 30  # the API and Gradio's routes (config, upload, queue, file, ...)
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/config") in routes
    for method, path in routes:
        if path in ("/login", "/logout"):
            continue
        r = anonymous.request(method, path, headers={"accept": "application/json"})
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "login_required"


def test_pages_redirect_to_the_login_form(anonymous) -> None:
    r = anonymous.get("/?__theme=dark", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/%3F__theme%3Ddark"
    r = anonymous.get("/v1/models", headers={"accept": "text/html"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    page = anonymous.get("/login?next=/")
    assert page.status_code == 200 and 'name="password"' in page.text and 'type="password"' in page.text


def test_websockets_are_refused_too(anonymous) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with anonymous.websocket_connect("/gradio_api/queue/join") as ws:
            ws.receive_text()


def test_api_clients_authenticate_with_basic_or_bearer(anonymous) -> None:
    assert anonymous.get("/v1/models", headers=basic(USER, PASSWORD)).status_code == 200
    assert anonymous.get("/v1/models", headers={"authorization": f"Bearer {PASSWORD}"}).status_code == 200
    for headers in (basic(USER, "wrong"), basic("eve", PASSWORD), {"authorization": "Bearer wrong"},
                    {"authorization": "Basic !!!notbase64"}, {"authorization": "Digest x"}):
        assert anonymous.get("/v1/models", headers=headers).status_code == 401


def test_browser_login_sets_a_session_cookie_that_opens_page_and_api(app) -> None:
    browser = TestClient(app, follow_redirects=False)
    wrong = browser.post("/login", data={"username": USER, "password": "nope", "next": "/"})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    assert SESSION_COOKIE not in browser.cookies

    r = browser.post("/login", data={"username": USER, "password": PASSWORD, "next": "/?x=1"})
    assert r.status_code == 303 and r.headers["location"] == "/?x=1"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get("/", headers={"accept": "text/html"}).status_code == 200
    assert browser.get("/config").status_code == 200
    assert browser.get("/v1/models").status_code == 200

    assert browser.get("/logout").status_code == 303
    assert browser.get("/v1/models").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/login"])
def test_login_never_redirects_off_site(app, target) -> None:
    r = TestClient(app, follow_redirects=False).post(
        "/login", data={"username": USER, "password": PASSWORD, "next": target})
    assert r.headers["location"] == "/"


def test_login_settings_and_environment() -> None:
    assert Login.from_settings("", "", environ={}) is None
    assert Login.from_settings("a", "b", environ={}) == Login("a", "b")
    assert Login.from_settings("a", "b", environ={"FOOTNOTES_USERNAME": "u", "FOOTNOTES_PASSWORD": "p"}) == Login("u", "p")
    assert Login.from_settings("", "", environ={"FOOTNOTES_USERNAME": "u", "FOOTNOTES_PASSWORD": "p"}) == Login("u", "p")
    with pytest.raises(ConfigError, match="both a username and a password"):
        Login.from_settings("a", "", environ={})


def test_without_login_everything_is_open(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    try:
        client = TestClient(create_app(svc, with_ui=False))
        assert client.get("/v1/models").status_code == 200
    finally:
        svc.kb.close()


def test_cross_site_writes_and_foreign_host_names_are_refused(tmp_path: Path) -> None:
    from ui.guards import LOOPBACK_NAMES

    svc = make_service(tmp_path)
    try:
        client = TestClient(create_app(svc, with_ui=False, allowed_hosts=LOOPBACK_NAMES),
                            base_url="http://127.0.0.1:7860")
        upload = {"file": ("planted.md", b"# planted\n")}
        r = client.post("/v1/documents", files=upload, headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]["message"]
        assert client.post("/v1/documents", files=upload, headers={"origin": "null"}).status_code == 403
        assert not (svc.folder() / "planted.md").exists()
        # the page itself (same origin) and clients without Origin (curl, SDKs) go through
        assert client.post("/v1/search", json={"query": "radium"}, headers={"origin": "http://127.0.0.1:7860"}).status_code == 200
        assert client.post("/v1/search", json={"query": "radium"}).status_code == 200
        assert client.get("/v1/models", headers={"origin": "https://evil.example"}).status_code == 200  # reads need CORS
        # DNS rebinding: a foreign name resolving to 127.0.0.1 gets nothing
        r = client.get("/v1/documents", headers={"host": "rebind.evil.example:7860"})
        assert r.status_code == 403 and "not served here" in r.json()["error"]["message"]
        for host in ("localhost:7860", "127.0.0.1", "[::1]:7860"):
            assert client.get("/v1/models", headers={"host": host}).status_code == 200, host
    finally:
        svc.kb.close()


def websocket_paths(app) -> list[str]:
    out = []

    def walk(routes, prefix: str) -> None:
        for r in routes:
            if isinstance(r, Mount):
                walk(r.routes, prefix + r.path)
            elif hasattr(r, "original_router"):
                walk(r.original_router.routes, prefix)
            elif isinstance(r, WebSocketRoute):
                out.append(re.sub(r"\{[^}]+\}", "x", prefix + r.path))
    walk(app.routes, "")
    return out


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def test_every_method_on_every_route_and_path_tricks_are_refused(app, anonymous) -> None:
    """Any method (not only the route's own: the check comes before routing), and paths that a
    careless prefix check would let through, all get 401 and no data."""
    paths = sorted({path for _, path in all_paths(app)} - {"/login", "/logout"})
    tricks = ["/v1//models", "/v1/./models", "/V1/models", "//v1/models", "/login/../v1/models", "/login/",
              "/logout/../v1/documents", "/login%2f..%2fv1/models", "/v1/documents/..%2F..%2Fetc%2Fpasswd",
              "/gradio_api/file=/etc/passwd", "/file=/etc/passwd", "/static/../v1/models", "/nonexistent"]
    for path in paths + tricks:
        for method in METHODS:
            r = anonymous.request(method, path, headers={"accept": "application/json"})
            assert r.status_code == 401, (method, path, r.status_code)
            assert b"radium" not in r.content and b"root:" not in r.content


def test_a_websocket_to_any_route_is_refused(app, anonymous) -> None:
    """Gradio 6 declares no websocket route; any that appears (and any path at all) is refused."""
    from starlette.websockets import WebSocketDisconnect

    paths = websocket_paths(app) + sorted({path for _, path in all_paths(app)} - {"/login", "/logout"})
    for path in paths + ["/queue/join", "/ws"]:
        with pytest.raises(WebSocketDisconnect):
            with anonymous.websocket_connect(path) as ws:
                ws.receive_text()
