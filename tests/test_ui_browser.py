"""The web page in a real Chromium (Debian's chromium + chromium-driver, driven by Selenium), against
`footnotes serve` on the packaged real models, with login on.

Log in, upload a file on the knowledge page, wait until it is indexed, ask a question only that
file answers, and check the answer, its citation of that file, the coloured tokens, the token
detail and the source opened at the cited place; then check that a document full of HTML is shown
as text and runs nothing. Screenshots go to test-artifacts/ (look at them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_models, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
USER, PASSWORD = "tester", "s3cret-pass"

FILLER = "".join(f"## Notes on road {i}\n\n" + "The old road to the mill is paved with grey stones and lined with "
                 "oak trees; carts use it on market days.\n" * 6 + "\n" for i in range(1, 7))
# The cited section comes after screens of other text: the source view must scroll to it.
ZORBLAT = (f"# Village notes\n\n{FILLER}## The Zorblat festival\n\nThe Zorblat festival is held every spring in "
           "the village of Quillby. Visitors eat blue pancakes and race wooden ducks on the river.\n")
HOSTILE = ('Glimmerford ducks are painted green. <script>window.__pwned = 1</script>'
           '<img src=x onerror="window.__pwned = 2"> <b onmouseover="window.__pwned = 3">bold</b>\n')
# A folder file (no upload sanitising) whose name and text try to break out of attributes and elements.
QUOTES_NAME = """glimmer"'><img src=x onerror=window.__pwned=4>.txt"""
QUOTES = ("""Glimmerford ducks nest under the mill bridge. " onmouseover="window.__pwned=5" x=" """
          """' onfocus='window.__pwned=6' autofocus x=' </pre></blockquote><script>window.__pwned=7</script>\n""")
QUESTION_MARKUP = 'What colour are the Glimmerford ducks? <img src=x onerror="window.__pwned=8">'
CONFIG = """
[sources]
kinds = ["folder"]
[watcher]
debounce_seconds = 0.2
"""


@pytest.fixture(scope="module")
def server():
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: run `make browser-deps` (apt-get install chromium chromium-driver)")
    work = Path(tempfile.mkdtemp(prefix="footnotes-browser-"))
    knowledge = work / "knowledge"
    knowledge.mkdir()
    shutil.copy(ROOT / "sample" / "marie-curie.md", knowledge)
    (work / "config.toml").write_text(CONFIG)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FOOTNOTES_USERNAME": USER, "FOOTNOTES_PASSWORD": PASSWORD,
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(work / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "ui.cli", "--config", str(work / "config.toml"), "--data-dir",
                             str(work / "data"), "serve", "--knowledge", str(knowledge), "--port", "0"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = _wait_for_url(proc, work / "server.log")
        yield url, work
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        found = re.search(r"serving .* at (http://127\.0\.0\.1:\d+/)", text)
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"footnotes serve exited with {proc.returncode}:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"footnotes serve did not start in {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="footnotes-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        driver.execute_script("window.scrollTo(0, 0)")
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(height + 50, 4000))
        time.sleep(0.5)
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    return path


def wait(driver, condition, timeout: float = 60):
    """Poll ``condition`` until it holds; an element the page re-rendered between finding and reading
    it (stale) only means: look again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def click_tab(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    tab = wait(driver, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                       if b.text.strip() == label), None))
    tab.click()


def set_number(driver, elem_id: str, value: int) -> None:
    """Type a value into a Gradio slider's number box."""
    from selenium.webdriver.common.keys import Keys

    box = wait(driver, lambda d: next(iter(css(d, f"#{elem_id} input[type=number]")), None))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)
    wait(driver, lambda d: css(d, f"#{elem_id} input[type=range]")[0].get_attribute("value") == str(value), 10)


def ask(driver, question: str) -> str:
    before = driver.execute_script("return document.querySelectorAll('#fn-chatbot .message').length")
    box = css(driver, "#fn-question textarea")[0]
    box.clear()
    box.send_keys(question)
    css(driver, "#fn-ask")[0].click()
    wait(driver, lambda d: d.execute_script(
        "return document.querySelectorAll('#fn-chatbot .message').length") > before, 30)
    wait(driver, lambda d: "Answered with" in css(d, "#fn-status")[0].text, 180)
    return css(driver, "#fn-answer-view .fn-tokens")[0].text


def test_upload_ask_cite_and_open_the_source(server, browser) -> None:
    url, work = server
    driver = browser
    driver.get(url)
    wait(driver, lambda d: "/login" in d.current_url)
    css(driver, "#username")[0].send_keys(USER)
    css(driver, "#password")[0].send_keys(PASSWORD)
    css(driver, "button[type=submit]")[0].click()
    wait(driver, lambda d: css(d, "#fn-question textarea"))

    # the knowledge page: upload a file, watch it being indexed
    click_tab(driver, "Knowledge")
    upload = wait(driver, lambda d: next(iter(css(d, "#fn-upload input[type=file]")), None))
    source = work / "zorblat-festival.md"
    source.write_text(ZORBLAT)
    hostile = work / "glimmerford.txt"
    hostile.write_text(HOSTILE)
    upload.send_keys(f"{source}\n{hostile}")
    wait(driver, lambda d: "zorblat-festival.md: saved" in css(d, "#fn-upload-status")[0].text, 60)

    def row_of(d, name):
        return next((r for r in css(d, "#fn-documents tr") if r.text.startswith(name)), None)

    wait(driver, lambda d: (row := row_of(d, "zorblat-festival.md")) is not None and "✓ indexed" in row.text, 60)
    wait(driver, lambda d: (row := row_of(d, "glimmerford.txt")) is not None and "✓ indexed" in row.text, 60)
    assert (work / "knowledge" / "zorblat-festival.md").read_text() == ZORBLAT
    screenshot(driver, "1-knowledge-page")

    # the chat page: small k and answer length keep the real model fast
    click_tab(driver, "Chat")
    css(driver, "#fn-settings button")[0].click()
    set_number(driver, "fn-k", 2)
    set_number(driver, "fn-max-tokens", 24)
    answer = ask(driver, "Where is the Zorblat festival held?")
    assert "Quillby" in answer, answer
    assert "from 2 chunks" in css(driver, "#fn-status")[0].text  # the page's k reached the engine

    legend = css(driver, "#fn-answer-view .fn-legend")[0].text
    numbers = dict(re.findall(r"\[(\d+)\] (\S+)", legend))
    cited = next(n for n, name in numbers.items() if name == "zorblat-festival.md")
    # colouring follows the support labels: the answer's own word is that file's, and a token no
    # chunk supports is coloured as no document's
    coloured = css(driver, f"#fn-answer-view .fn-tok.fn-c{cited}")
    quillby = [t for t in css(driver, "#fn-answer-view .fn-tok") if t.text.strip() and t.text.strip() in "Quillby"]
    assert quillby and all(f"fn-c{cited}" in t.get_attribute("class").split() for t in quillby), \
        [t.get_attribute("class") for t in quillby]
    others = [t for t in css(driver, "#fn-answer-view .fn-tok") if "fn-none" not in t.get_attribute("class")]
    assert len(coloured) >= len(others) // 2  # of the words a document supports, most come from that file
    background = coloured[0].value_of_css_property("background-color")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
    assert any(s.text == f"[{cited}]" for s in css(driver, "#fn-answer-view sup.fn-ref"))  # readable without colour
    head = css(driver, "#fn-answer-view .fn-answer-head")[0].text
    assert re.search(r"\d+ of \d+ content words? supported by your documents", head), head
    assert "from the model's memory, not found in your documents" in legend
    driver.execute_script("document.querySelector('#fn-answer-view').scrollIntoView({block: 'start'})")
    screenshot(driver, "2-answer")

    # selecting a token shows its document posterior, its PMI under each chunk and its closed-book probability
    quillby[0].click()
    wait(driver, lambda d: "zorblat-festival.md" in css(d, "#fn-token-detail")[0].text, 30)
    detail = css(driver, "#fn-token-detail")[0].text
    assert "Supported by" in detail and "PMI" in detail and "Closed-book p(" in detail, detail
    assert len(css(driver, "#fn-token-detail td.fn-pmi")) == 2  # one PMI per retrieved chunk (k = 2)

    # opening the cited chunk shows the source scrolled to the highlighted span
    card = next(c for c in css(driver, "#fn-chunks-view .fn-chunk") if "zorblat-festival.md" in c.text)
    card.find_element("css selector", ".fn-open").click()
    wait(driver, lambda d: "Quillby" in "".join(m.text for m in css(d, "#fn-source-view mark#fn-cited")), 30)
    time.sleep(0.5)  # the scroll happens on the next animation frame
    assert "zorblat-festival.md" in css(driver, "#fn-source-view .fn-source-head")[0].text
    in_view = driver.execute_script("""
        const m = document.querySelector('#fn-source-view mark#fn-cited').getBoundingClientRect();
        const box = document.querySelector('#fn-source-view .fn-source-text').getBoundingClientRect();
        return m.top >= box.top - 1 && m.top < box.bottom && m.top >= 0 && m.top < window.innerHeight;""")
    assert in_view
    assert driver.execute_script("return document.querySelector('#fn-source-view .fn-source-text').scrollTop") > 0
    screenshot(driver, "3-source-opened")
    screenshot(driver, "4-chat-full-page", full_page=True)


def test_document_html_is_shown_as_text_and_runs_nothing(server, browser) -> None:
    """Document text and names full of markup, and a question with markup, are shown literally in
    the chat, the answer, the chunks, the token detail and the source view; nothing runs."""
    driver = browser  # logged in and on the chat page from the test above
    url, work = server
    (work / "knowledge" / QUOTES_NAME).write_text(QUOTES)  # straight into the folder: the watcher indexes it
    click_tab(driver, "Knowledge")
    wait(driver, lambda d: any(r.text.startswith(QUOTES_NAME) and "✓ indexed" in r.text
                               for r in css(d, "#fn-documents tr")), 120)  # 60 s ran out once in a full run on 2 busy cores
    click_tab(driver, "Chat")
    css(driver, "#fn-new-chat")[0].click()
    wait(driver, lambda d: not d.execute_script("return document.querySelectorAll('#fn-chatbot .message').length"), 30)
    ask(driver, QUESTION_MARKUP)
    cards = {name: c for c in css(driver, "#fn-chunks-view .fn-chunk")
             for name in ("glimmerford.txt", QUOTES_NAME) if name in c.text}
    assert set(cards) == {"glimmerford.txt", QUOTES_NAME}, [c.text[:80] for c in css(driver, "#fn-chunks-view .fn-chunk")]
    assert "<script>window.__pwned = 1</script>" in cards["glimmerford.txt"].text
    assert 'onerror="window.__pwned = 2"' in cards["glimmerford.txt"].text
    assert '" onmouseover="window.__pwned=5" x="' in cards[QUOTES_NAME].text
    assert QUESTION_MARKUP in css(driver, "#fn-chatbot")[0].text  # the question, as typed
    css(driver, "#fn-answer-view .fn-tok")[0].click()  # the token detail lists the documents by name
    wait(driver, lambda d: QUOTES_NAME in css(d, "#fn-token-detail")[0].text, 30)
    views = ("#fn-chunks-view", "#fn-source-view", "#fn-answer-view", "#fn-chatbot", "#fn-token-detail", "#fn-documents")
    for name, text in (("glimmerford.txt", "<script>window.__pwned = 1</script>"), (QUOTES_NAME, "<script>window.__pwned=7")):
        card = next(c for c in css(driver, "#fn-chunks-view .fn-chunk") if name in c.text)
        card.find_element("css selector", ".fn-open").click()
        wait(driver, lambda d: name in css(d, "#fn-source-view .fn-source-head")[0].text, 30)
        time.sleep(1)
        assert text in css(driver, "#fn-source-view .fn-source-text")[0].text
        for view in views:
            bad = css(driver, f"{view} script, {view} img, {view} [onerror], {view} [onmouseover], {view} [onfocus]")
            assert not bad, (view, [b.get_attribute("outerHTML")[:100] for b in bad])
        assert driver.execute_script("return window.__pwned === undefined")
    screenshot(driver, "5-hostile-document", full_page=True)


def test_each_browser_session_has_its_own_conversation(server, browser) -> None:
    driver = browser  # the first tab holds the conversation of the test above
    first = driver.current_window_handle
    messages = "return document.querySelectorAll('#fn-chatbot .message').length"
    assert driver.execute_script(messages) >= 2
    driver.switch_to.new_window("tab")
    try:
        driver.get(server[0])
        wait(driver, lambda d: css(d, "#fn-question textarea"))
        time.sleep(1)
        assert driver.execute_script(messages) == 0
        assert "Ask a question" in css(driver, "#fn-answer-view")[0].text
    finally:
        driver.close()
        driver.switch_to.window(first)
    assert driver.execute_script(messages) >= 2


def test_words_from_the_models_memory_are_marked_without_colour(server, browser) -> None:
    """A closed-book answer has no document behind it: every content word carries the dotted
    underline and the "?", the header says none is supported, and the legend explains the mark."""
    from selenium.webdriver.common.keys import Keys

    driver = browser
    css(driver, "#fn-new-chat")[0].click()
    wait(driver, lambda d: not d.execute_script("return document.querySelectorAll('#fn-chatbot .message').length"), 30)
    box = css(driver, "#fn-mode input")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("closed-book")
    option = wait(driver, lambda d: next((o for o in css(d, "ul[role=listbox] li, [role=option]")
                                          if o.text.strip() == "closed-book"), None), 10)
    option.click()
    wait(driver, lambda d: css(d, "#fn-mode input")[0].get_attribute("value") == "closed-book", 10)
    ask(driver, "Where is the Zorblat festival held?")
    assert "Answered with closed-book" in css(driver, "#fn-status")[0].text
    head = css(driver, "#fn-answer-view .fn-answer-head")[0].text
    found = re.search(r"(\d+) of (\d+) content words? supported by your documents", head)
    assert found and found[1] == "0", head
    marked = css(driver, "#fn-answer-view .fn-tok.fn-unsupported")
    if int(found[2]):
        assert marked and "came from the model's memory" in head
        assert all("fn-none" in t.get_attribute("class").split() for t in marked)  # no document's colour
        assert [q.text for q in css(driver, "#fn-answer-view .fn-tokens sup.fn-q")] == ["?"] * len(
            css(driver, "#fn-answer-view .fn-tokens sup.fn-q"))
        word = css(driver, "#fn-answer-view .fn-tok.fn-unsupported .fn-memory")[0]
        assert word.value_of_css_property("text-decoration-style") == "dotted"  # a mark that is not a colour
        assert "from the model's memory" in marked[0].get_attribute("title")
    legend = css(driver, "#fn-answer-view .fn-legend")[0].text
    assert "from the model's memory, not found in your documents" in legend
    driver.execute_script("document.querySelector('#fn-answer-view').scrollIntoView({block: 'start'})")
    screenshot(driver, "6-memory-marks")
    if marked:
        marked[0].click()
        wait(driver, lambda d: "From the model's memory" in css(d, "#fn-token-detail")[0].text, 30)
        assert "Closed-book p(" in css(driver, "#fn-token-detail")[0].text
        screenshot(driver, "7-memory-token-detail")


def pick_mode(driver, name: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = css(driver, "#fn-mode input")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(name)
    option = wait(driver, lambda d: next((o for o in css(d, "ul[role=listbox] li, [role=option]")
                                          if o.text.strip() == name), None), 10)
    option.click()
    wait(driver, lambda d: css(d, "#fn-mode input")[0].get_attribute("value") == name, 10)


def shown(driver, elem_id: str) -> bool:
    found = css(driver, f"#{elem_id}")
    return bool(found) and found[0].is_displayed()


def test_each_modes_settings_panel_is_built_from_its_dataclass(server, browser) -> None:
    """The panel shows the chosen mode's request_settings with the type, default and help text of its
    Settings dataclass (no mode is named in the page's code), and hides the other modes'."""
    driver = browser
    driver.switch_to.new_window("tab")  # a fresh page of its own (the login cookie is shared)
    try:
        driver.get(server[0])
        if "/login" in driver.current_url:
            css(driver, "#username")[0].send_keys(USER)
            css(driver, "#password")[0].send_keys(PASSWORD)
            css(driver, "button[type=submit]")[0].click()
        wait(driver, lambda d: css(d, "#fn-question textarea"))
        check_the_settings_panels(driver)
    except Exception:
        screenshot(driver, "7-settings-failed")
        raise
    finally:
        driver.close()
        driver.switch_to.window(driver.window_handles[0])


def check_the_settings_panels(driver) -> None:
    css(driver, "#fn-settings button")[0].click()
    wait(driver, lambda d: shown(d, "fn-k"), 10)
    assert shown(driver, "fn-setting-rag-token-beam_size") and not shown(driver, "fn-setting-knn-lm-lambda")
    pick_mode(driver, "knn-lm")
    lam = wait(driver, lambda d: shown(d, "fn-setting-knn-lm-lambda") and css(d, "#fn-setting-knn-lm-lambda")[0], 10)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", lam)
    assert "lambda" in lam.text and "p(w) = λ·p_kNN(w) + (1 − λ)·p_LM(w)" in lam.text and "(default: 0.25)" in lam.text
    assert lam.find_elements("css selector", "input[type=number]")[0].get_attribute("value") == "0.25"
    conditioned = css(driver, "#fn-setting-knn-lm-retrieval_conditioned input[type=checkbox]")
    assert conditioned and not conditioned[0].is_selected()  # a bool is a checkbox, at its default
    assert shown(driver, "fn-k") and not shown(driver, "fn-setting-rag-sequence-decoding")
    screenshot(driver, "7-knn-lm-settings")

    pick_mode(driver, "rag-sequence")
    wait(driver, lambda d: shown(d, "fn-setting-rag-sequence-decoding"), 10)
    decoding = css(driver, "#fn-setting-rag-sequence-decoding")[0]
    radios = decoding.find_elements("css selector", "input[type=radio]")
    assert [r.get_attribute("value") for r in radios] == ["fast", "thorough"]  # a Literal is a choice
    assert next(r for r in radios if r.get_attribute("value") == "fast").is_selected()
    assert not shown(driver, "fn-setting-knn-lm-lambda")

    pick_mode(driver, "closed-book")  # no retrieval: no k, no prior temperature
    wait(driver, lambda d: not shown(d, "fn-k"), 10)
    assert shown(driver, "fn-max-tokens") and shown(driver, "fn-setting-closed-book-beam_size")
    assert not shown(driver, "fn-temperature") and not shown(driver, "fn-setting-rag-sequence-decoding")
