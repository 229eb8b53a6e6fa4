"""A third-party answer mode plugs in by an entry point alone: its own settings (a dataclass it
declares) appear in config.toml generation, are read from [answer.<mode>], are accepted from the HTTP
API's ``settings`` (only those it whitelists), and are shown on the web page. Per-request settings
never name a model or a path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assistant.engine import mode_class, mode_names
from assistant.modes.base import ModeBase, NoSettings, own_settings
from knowledge.errors import ConfigError
from tests.ui_fixtures import make_service
from ui import page
from ui.mode_panel import overrides_of
from ui.server import create_app
from ui.settings import load_config

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar, Literal

from assistant.answer import Answer, TokenProvenance
from assistant.modes.base import ModeBase


@dataclass(frozen=True)
class EchoSettings:
    greeting: str = "hello"  # the word every answer starts with
    repeat: int = 1  # how many times the question is echoed
    tone: Literal["plain", "loud"] = "plain"  # "loud" shouts the answer
    weights_path: str = "/nonexistent/echo.bin"  # a file: config only, never per request

    moved_from: ClassVar[dict] = {"echo_greeting": "greeting"}


class EchoMode(ModeBase):
    name = "echo"
    uses_retrieval = False
    Settings = EchoSettings
    request_settings = ("greeting", "repeat", "tone")

    def answer(self, question, history, hits, settings=None):
        own = (settings or self.defaults()).own
        text = " ".join([own.greeting] + [question] * own.repeat)
        text = text.upper() if own.tone == "loud" else text
        return Answer(text, self.name, (), (TokenProvenance(text, 1.0),))
'''


@pytest.fixture
def echo_plugin(tmp_path, monkeypatch):
    """Install a third-party mode the way pip would: a module plus a dist-info with entry points."""
    site = tmp_path / "site"
    info = site / "echo_mode-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "echo_footnotes_mode.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-mode\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[footnotes.modes]\necho = echo_footnotes_mode:EchoMode\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_the_mode_is_registered_by_its_entry_point(echo_plugin):
    assert "echo" in mode_names() and {"rag-token", "knn-lm", "realm"} <= set(mode_names())
    assert issubclass(mode_class("echo"), ModeBase)


def test_its_table_is_in_config_toml_generation(echo_plugin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(echo_plugin), str(ROOT)])}
    out = subprocess.run([sys.executable, "scripts/write_config.py"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    table = out.split("[answer.echo]\n", 1)[1].split("\n\n", 1)[0]
    assert table.splitlines() == [
        'greeting = "hello"  # the word every answer starts with',
        "repeat = 1  # how many times the question is echoed",
        'tone = "plain"  # "loud" shouts the answer',
        'weights_path = "/nonexistent/echo.bin"  # a file: config only, never per request',
    ]
    assert out.index("[answer]") < out.index("[answer.echo]") < out.index("[knn]")


def test_its_table_is_read_from_a_config_file_strictly(echo_plugin, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[answer]\nmode = "echo"\n[answer.echo]\ngreeting = "hi"\nrepeat = 2\n')
    answer = load_config(good).assistant.answer
    own = own_settings(mode_class("echo"), answer)
    assert (own.greeting, own.repeat, own.tone) == ("hi", 2, "plain")
    for body, words in [("colour = 1", f"{tmp_path / 'bad.toml'}: unknown key 'answer.echo.colour'; known keys in "
                                       "[answer.echo]: greeting, repeat, tone, weights_path"),
                        ('repeat = "2"', "'answer.echo.repeat' must be int"),
                        ('tone = "soft"', """'answer.echo.tone' = 'soft': use one of "plain", "loud\"""")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[answer.echo]\n{body}\n")
        with pytest.raises(ConfigError) as err:
            own_settings(mode_class("echo"), load_config(bad).assistant.answer)
        assert words in str(err.value)
    moved = tmp_path / "old.toml"
    moved.write_text("[answer]\necho_greeting = \"hi\"\n")
    with pytest.raises(ConfigError, match=r"answer.echo_greeting moved: write it as greeting under \[answer.echo\] "
                                          r"in old.toml"):
        load_config(moved)
    typo = tmp_path / "typo.toml"
    typo.write_text("[answer.ecko]\ngreeting = \"hi\"\n")
    with pytest.raises(ConfigError, match=r"\[answer.ecko\] is not a registered mode; registered modes: .*echo"):
        load_config(typo)


@pytest.fixture
def echo_service(echo_plugin, tmp_path):
    answer = load_config(_write(tmp_path / "c.toml", '[answer]\nk = 2\nmax_new_tokens = 6\n'
                                                       '[answer.echo]\ngreeting = "hey"\n')).assistant.answer
    service = make_service(tmp_path, answer=answer)
    yield service
    service.kb.close()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_its_settings_are_accepted_from_the_http_api(echo_service):
    client = TestClient(create_app(echo_service, with_ui=False))
    body = {"model": "echo", "messages": [{"role": "user", "content": "ping"}]}
    assert client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "hey ping"
    r = client.post("/v1/chat/completions", json={**body, "settings": {"greeting": "yo", "repeat": 2, "tone": "loud"}})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "YO PING PING"
    for settings, words in [({"weights_path": "/etc/passwd"}, "unknown answer setting 'weights_path' for mode echo"),
                            ({"repeat": "2"}, "answer setting repeat = '2': expected int"),
                            ({"tone": "soft"}, "answer setting tone = 'soft': use one of plain, loud")]:
        err = client.post("/v1/chat/completions", json={**body, "settings": settings})
        assert err.status_code == 400 and words in err.json()["error"]["message"], err.text
    allowed = client.post("/v1/chat/completions", json={**body, "settings": {"weights_path": "x"}}).json()
    assert "settable: k, prior_score, prior_temperature" in allowed["error"]["message"]
    assert allowed["error"]["message"].endswith("greeting, repeat, tone")


def test_no_request_names_a_model_or_a_path(echo_service):
    """realm's reader is a model id or a local path: config only. A request that sends it is a 400
    naming the settings it may send; so is any unknown key."""
    client = TestClient(create_app(echo_service, with_ui=False))
    body = {"model": "realm", "messages": [{"role": "user", "content": "who discovered radium ?"}]}
    for key in ("realm_reader", "reader", "model", "system_prompt", "modes"):
        r = client.post("/v1/chat/completions", json={**body, "settings": {key: "/tmp/some-model"}})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and f"unknown answer setting '{key}' for mode realm" in message, message
        assert "settable: k, " in message and "threshold, max_answer_tokens, n_best, window_tokens, stride" in message
    r = client.post("/v1/chat/completions", json={**body, "settings": {"threshold": 0.0, "n_best": 2}})
    assert r.status_code == 200 and r.json()["footnotes"]["mode"] == "realm"
    moved = client.post("/v1/chat/completions", json={**body, "settings": {"realm_threshold": 0.0}})
    assert "realm_threshold moved: send it as threshold with mode realm" in moved.json()["error"]["message"]


def test_its_settings_panel_is_built_from_its_dataclass(echo_service):
    panel = page.settings_panel(echo_service)
    echo = [s for s in panel if "echo" in s.modes]
    assert [(s.key, s.kind, s.default, s.help) for s in echo] == [
        ("max_new_tokens", "int", 6, "answer length limit, in generator tokens"),
        ("greeting", "text", "hey", "the word every answer starts with"),
        ("repeat", "int", 1, "how many times the question is echoed"),
        ("tone", "choice", "plain", '"loud" shouts the answer'),
    ]
    assert next(s for s in echo if s.key == "tone").choices == ("plain", "loud")
    assert "k" not in {s.key for s in echo}  # echo retrieves nothing: no k, no prior temperature
    values = [s.default for s in panel]
    assert overrides_of(panel, "echo", values) == {"max_new_tokens": 6, "greeting": "hey", "repeat": 1, "tone": "plain"}
    assert set(overrides_of(panel, "knn-lm", values)) == {
        "k", "prior_temperature", "max_new_tokens", "neighbours", "lambda", "temperature", "retrieval_conditioned",
        "neighbours_shown"}


def test_its_settings_are_shown_on_the_web_page(echo_service):
    config = TestClient(create_app(echo_service)).get("/config").json()
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    greeting = props["fn-setting-echo-greeting"]
    assert greeting["label"] == "greeting" and greeting["value"] == "hey"
    assert greeting["info"] == "the word every answer starts with (default: hey)"
    assert props["fn-setting-echo-tone"]["choices"] == [["plain", "plain"], ["loud", "loud"]]
    assert props["fn-setting-echo-repeat"]["precision"] == 0
    assert "fn-setting-echo-weights_path" not in props  # not a request setting: not on the page either
    assert props["fn-setting-knn-lm-lambda"]["value"] == 0.25


def test_a_mode_declaration_is_checked_when_the_class_is_defined():
    with pytest.raises(TypeError, match="request_settings names 'lambda'"):
        type("Bad", (ModeBase,), {"answer": lambda *a: None, "request_settings": ("lambda",)})
    with pytest.raises(TypeError, match="shadows the shared"):
        from dataclasses import make_dataclass
        own = make_dataclass("Own", [("k", int, 3)], frozen=True)
        type("Bad", (ModeBase,), {"answer": lambda *a: None, "Settings": own})
    assert mode_class("closed-book").Settings is not NoSettings
