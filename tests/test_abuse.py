"""Hostile files and names: uploads (HTTP API and the web page's upload path) and files dropped
into the knowledge folder. Each is refused or contained with a message saying what is wrong and
how to fix it; time and memory stay bounded; the other documents are indexed and searchable."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knowledge.errors import DocumentError
from knowledge.loaders import load_document
from knowledge.types import RawDocument
from tests.ui_fixtures import make_service
from ui.server import create_app

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"curie.md": "# Marie Curie\n\nmarie curie discovered radium and polonium in paris .\n",
        "ada.md": "# Ada Lovelace\n\nada lovelace wrote the first program .\n"}


# ---------------------------------------------------------------- hostile files, built in memory

def pdf_with(content: bytes, pages: int = 1, form: bytes | None = None) -> bytes:
    """A PDF of ``pages`` pages that all draw one shared FlateDecode content stream (``content``);
    with ``form``, the pages' resources hold it as Form XObject /X1 (draw it with ``/X1 Do``)."""
    font = 4 + pages + (1 if form else 0)
    resources = f"/Font << /F1 {font} 0 R >>" + (f" /XObject << /X1 {font - 1} 0 R >>" if form else "")
    stream = zlib.compress(content, 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{4 + i} 0 R" for i in range(pages)).encode(), pages),
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream)]
    objects += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R /Resources << {resources} >> >>"
                .encode()] * pages
    if form:
        packed = zlib.compress(form, 9)
        objects.append(b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
                       b"/Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (font, len(packed), packed))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


WORDS = b"BT /F1 12 Tf 72 700 Td " + b"(word) Tj " * 50_000 + b"ET\n"  # 50k text operators, 500 kB, zips to 1 kB


def docx_with(document_xml_bytes: int, declared: int | None = None) -> bytes:
    """A .docx whose word/document.xml unpacks to about ``document_xml_bytes`` (repeated paragraphs);
    ``declared`` overrides the uncompressed size written in the zip directory (a lying bomb)."""
    import docx

    buffer = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("seed")
    document.save(buffer)
    para = "<w:p><w:r><w:t>boom boom boom boom boom boom boom boom</w:t></w:r></w:p>"
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                head, tail = data.decode().split("<w:body>")
                data = (head + "<w:body>" + para * (document_xml_bytes // len(para)) + tail).encode()
            target.writestr(info.filename, data)
    packed = out.getvalue()
    if declared is not None:  # patch the uncompressed size in the local header and the central directory
        name = b"word/document.xml"
        real = zipfile.ZipFile(io.BytesIO(packed)).getinfo("word/document.xml").file_size
        packed = packed.replace(real.to_bytes(4, "little") + len(name).to_bytes(2, "little"),
                                declared.to_bytes(4, "little") + len(name).to_bytes(2, "little"))
    return packed


def load(name: str, data: bytes, max_bytes: int = 50_000_000):
    return load_document(RawDocument(name, data, Path(name).suffix, None), max_bytes)


# ---------------------------------------------------------------- loaders, one hostile file each

@pytest.mark.slow
def test_pdf_with_one_stream_shared_by_many_pages_is_refused_quickly() -> None:
    data = pdf_with(WORDS, pages=400)  # 10 kB that would take ~20 minutes and give 80 MB of text
    started = time.monotonic()
    with pytest.raises(DocumentError, match=r"bomb\.pdf needs more than [\d,]+ drawing operations.*PDF bomb"):
        load("bomb.pdf", data)
    assert time.monotonic() - started < 30  # unbounded, it runs for minutes


def test_pdf_with_a_form_drawn_over_and_over_is_refused() -> None:
    data = pdf_with(b"/X1 Do " * 5000, form=WORDS)  # pypdf re-parses the form at each of the 5,000 draws
    started = time.monotonic()
    with pytest.raises(DocumentError, match="drawing operations.*PDF bomb"):
        load("forms.pdf", data)
    assert time.monotonic() - started < 30  # unbounded, it runs for minutes


def test_pdf_with_a_huge_compressed_stream_is_refused() -> None:
    data = pdf_with(b"BT /F1 12 Tf 72 700 Td (hello) Tj ET\n" + b" " * 100_000_000)  # 100 MB in a 100 kB file
    started = time.monotonic()
    with pytest.raises(DocumentError, match=r"huge\.pdf could not be read as a PDF \(LimitReachedError"):
        load("huge.pdf", data)
    assert time.monotonic() - started < 10


def test_pdf_text_over_the_file_size_limit_is_refused() -> None:
    data = pdf_with(WORDS, pages=2)
    assert load("ok.pdf", data, max_bytes=1_000_000).text.startswith("word")
    with pytest.raises(DocumentError, match="more than 100,000 characters of text.*sources.max_file_bytes"):
        load("big.pdf", data, max_bytes=100_000)


def test_docx_declaring_gigabytes_is_refused_unopened() -> None:
    data = docx_with(10_000, declared=4_000_000_000)
    with pytest.raises(DocumentError, match=r"bomb\.docx unpacks to 4,000,[\d,]+ bytes.*zip bomb"):
        load("bomb.docx", data)


def test_docx_that_unpacks_past_its_declared_size_fails_its_check() -> None:
    data = docx_with(3_000_000, declared=1000)  # zipfile stops at the declared size: a CRC error, no inflating
    with pytest.raises(DocumentError, match=r"liar\.docx could not be read as a Word document \(BadZipFile"):
        load("liar.docx", data)


def test_docx_xml_over_the_file_size_limit_is_refused_and_a_long_one_is_read_quickly() -> None:
    data = docx_with(3_000_000)  # 3 MB of XML in a 20 kB file
    with pytest.raises(DocumentError, match="bytes of XML once unpacked, more than sources.max_file_bytes"):
        load("bomb.docx", data, max_bytes=1_000_000)
    started = time.monotonic()
    assert load("long.docx", data, max_bytes=5_000_000).text.count("boom") > 300_000
    assert time.monotonic() - started < 15  # python-docx's per-paragraph style lookup took ~60 s here


@pytest.mark.parametrize("markup", ["<div>" * 100_000 + "deep text" + "</div>" * 100_000,
                                    "<p>deep text</p>" + "</" * 500_000,
                                    "<p>deep text</p>" + "<!" * 500_000,
                                    "<p>deep text</p><!--" + "x" * 1_000_000])
def test_hostile_html_is_read_in_linear_time(markup: str) -> None:
    started = time.monotonic()
    assert "deep text" in load("deep.html", markup.encode()).text
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("name, data, why", [
    ("binary.txt", os.urandom(4096), "looks like binary data"),
    ("nul.md", b"# title\n\x00\x00\x00 text", "NUL bytes"),
    ("exe.py", b"MZ\x90\x00" + bytes(range(256)) * 8, "binary"),
])
def test_binary_with_a_text_extension_is_refused_with_the_fix(name: str, data: bytes, why: str) -> None:
    with pytest.raises(DocumentError, match=why) as refused:
        load(name, data)
    assert "remove it or add it to sources.folder.ignore" in str(refused.value)


def test_invalid_utf8_is_decoded_as_a_legacy_encoding_or_refused() -> None:
    mixed = "café au lait, naïve façade. ".encode("latin-1") * 20 + b"\xff\xfe\x80\x81 end"
    assert "caf" in load("legacy.txt", mixed).text
    with pytest.raises(DocumentError, match="UTF-16.*re-save it as UTF-8|not valid UTF-16"):
        load("bom.txt", b"\xff\xfe" + b"\x00\xd8" + b"a")  # a UTF-16 BOM, then a lone surrogate


# ---------------------------------------------------------------- uploads

HOSTILE_NAMES = ["../../escape.md", "/etc/cron.d/evil.md", "..\\..\\windows.md", "a\x00b.md", "C:\\temp\\drive.md",
                 "..／..／fullwidth.md", "\u202egnp.md", "x" * 400 + ".md", "/", "..", "notes.md\x00.exe",
                 "con.md", ".hidden.md", "re\u0301sume\u0301.md"]


@pytest.fixture
def service(tmp_path: Path):
    svc = make_service(tmp_path, GOOD, max_upload_bytes=50_000)
    yield svc
    svc.kb.close()


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def assert_only_inside(service, tmp_path: Path, before: set[Path]) -> None:
    """Every new file is directly inside the knowledge folder, with a visible, indexable name."""
    folder = service.folder()
    new = files_under(tmp_path) - before
    data_dir = tmp_path / "data"
    new = {p for p in new if not p.is_relative_to(data_dir)}
    assert new, "nothing was saved"
    for path in new:
        assert path.parent == folder, path
        assert not path.name.startswith(".") and "\x00" not in path.name and len(path.name.encode()) <= 200


def test_hostile_upload_names_through_the_api_stay_in_the_folder(service, tmp_path: Path) -> None:
    client = TestClient(create_app(service, with_ui=False))
    before = files_under(tmp_path)
    answers = {}
    for name in HOSTILE_NAMES:
        r = client.post("/v1/documents", files={"file": (name, b"# upload\n\nharmless text\n", "text/markdown")})
        answers[name] = r
        assert r.status_code in (201, 400, 415), (name, r.status_code, r.text)
        if r.status_code != 201:
            assert r.json()["error"]["message"], name  # refused with a message
    assert answers["../../escape.md"].json()["saved"][0]["source"] == "escape.md"
    assert answers["/etc/cron.d/evil.md"].json()["saved"][0]["source"] == "evil.md"
    assert answers["..\\..\\windows.md"].json()["saved"][0]["source"] == "windows.md"
    assert answers[".."].status_code == 400 and "no usable characters" in answers[".."].json()["error"]["message"]
    assert_only_inside(service, tmp_path, before)
    assert not (tmp_path.parent / "escape.md").exists() and not (tmp_path / "escape.md").exists()


def test_hostile_names_through_the_web_page_upload_path(service, tmp_path: Path) -> None:
    """The page hands the server a temp file and its name; the same checks apply (ui/app.py on_upload)."""
    staged = tmp_path / "staged.bin"
    staged.write_bytes(b"# upload\n\nharmless text\n")
    before = files_under(tmp_path)
    for name in HOSTILE_NAMES:
        try:
            saved = service.upload_file(name, staged)
            assert saved.path.parent == service.folder(), name
        except DocumentError as exc:
            assert "rename" in str(exc) or "not supported" in str(exc), (name, str(exc))
    assert_only_inside(service, tmp_path, before)


def test_oversized_and_mistyped_uploads_are_refused_and_leave_nothing(service, tmp_path: Path) -> None:
    client = TestClient(create_app(service, with_ui=False))
    before = files_under(service.folder())
    r = client.post("/v1/documents", files={"file": ("big.md", b"x" * 60_000)})
    assert r.status_code == 413 and "server.max_upload_bytes" in r.json()["error"]["message"]
    r = client.post("/v1/documents", files={"file": ("tool.exe", b"MZ")})
    assert r.status_code == 415 and "not supported" in r.json()["error"]["message"]
    assert files_under(service.folder()) == before  # no temp file left behind either


def test_hostile_uploads_fail_alone_and_the_rest_keeps_working(service) -> None:
    """Bombs and binary uploaded through the API are saved (they are within the size limit), then
    fail to index with a message; the good documents and search are untouched."""
    client = TestClient(create_app(service, with_ui=False))
    bombs = {"bomb.pdf": pdf_with(WORDS, pages=100), "bomb.docx": docx_with(10_000, declared=4_000_000_000),
             "binary.txt": os.urandom(4096), "good.md": b"# Polonium\n\npolonium was named after poland .\n"}
    for name, data in bombs.items():
        assert client.post("/v1/documents", files={"file": (name, data)}).status_code == 201, name
    [report] = service.kb.sync()
    assert set(report.added) == {"good.md"}
    failed = {f.doc_id: f.error for f in report.failed}
    assert set(failed) == {"bomb.pdf", "bomb.docx", "binary.txt"}
    listed = {d["source"]: d for d in client.get("/v1/documents").json()["documents"]}
    for name, error in failed.items():
        assert listed[name]["status"] == "failed" and listed[name]["error"] == error
    hits = client.post("/v1/search", json={"query": "polonium poland", "k": 1}).json()
    assert hits[0]["source"] == "good.md"
    assert client.post("/v1/search", json={"query": "radium", "k": 1}).json()[0]["source"] == "curie.md"


# ---------------------------------------------------------------- the knowledge folder

def test_symlinks_out_of_the_folder_are_never_indexed_or_served(service, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nthe vault code is 4711 .\n")
    folder = service.folder()
    (folder / "linked-secret.md").symlink_to(outside / "secret.md")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    (folder / "dangling.md").symlink_to(tmp_path / "missing.md")
    (folder / "inside-link.md").symlink_to(folder / "ada.md")  # a link that stays inside is fine
    [report] = service.kb.sync()
    assert set(report.added) == {"inside-link.md"} and not report.failed
    client = TestClient(create_app(service, with_ui=False))
    sources = {d["source"] for d in client.get("/v1/documents").json()["documents"]}
    assert sources == {"curie.md", "ada.md", "inside-link.md"}
    hits = client.post("/v1/search", json={"query": "vault code 4711", "k": 5}).json()
    assert all("secret" not in h["source"] and "4711" not in h["text"] for h in hits)
    with pytest.raises(DocumentError, match="outside the knowledge folder"):
        service.kb.source("folder").fetch("linked-secret.md")
    with pytest.raises(DocumentError):
        service.document_text("linked-dir/secret.md")
    r = client.delete("/v1/documents/linked-dir/secret.md")
    assert r.status_code in (400, 404) and (outside / "secret.md").exists()
    r = client.delete("/v1/documents/..%2Foutside%2Fsecret.md")
    assert r.status_code in (400, 404) and (outside / "secret.md").exists()


SYNC_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from knowledge.kb import KnowledgeBase
from tests.conftest import small_config
from tests.fakes import HashingEmbedder
folder, data = Path(sys.argv[1]), Path(sys.argv[2])
kb = KnowledgeBase.open(small_config(max_file_bytes=2_000_000), data, folder=folder, embedder=HashingEmbedder())
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
[report] = kb.sync()
seconds = time.monotonic() - started
hits = [h.chunk.doc_id for h in kb.retriever.search("radium polonium", 1)]
print(json.dumps({"added": sorted(report.added), "failed": {f.doc_id: f.error for f in report.failed},
                  "seconds": seconds, "rss_open_mb": rss_open / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "hits": hits}))
kb.close()
"""


@pytest.mark.slow
def test_a_folder_full_of_hostile_files_syncs_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """One sync (in its own process, so its peak memory is its own) over every kind of hostile file
    next to good ones: each hostile file is refused with its reason, the good ones are indexed."""
    folder = tmp_path / "knowledge"
    folder.mkdir()
    for name, text in GOOD.items():
        (folder / name).write_text(text)
    hostile = {
        "bomb.pdf": pdf_with(WORDS, pages=400),
        "bomb.docx": docx_with(10_000, declared=4_000_000_000),
        "xml-bomb.docx": docx_with(3_000_000),  # 3 MB of XML, over max_file_bytes (2 MB) once unpacked
        "nested.html": ("<div>" * 100_000 + "nested text" + "</div>" * 100_000).encode(),
        "slashes.html": b"<p>slashes</p>" + b"</" * 500_000,
        "binary.txt": os.urandom(100_000),
        "oversized.md": b"# big\n\n" + b"lorem ipsum " * 200_000,
        "nul.md": b"text\x00\x00more",
    }
    for name, data in hostile.items():
        (folder / name).write_bytes(data)
    (folder / "secret-link.md").symlink_to("/etc/hostname")
    run = subprocess.run([sys.executable, "-c", SYNC_SCRIPT, str(folder), str(tmp_path / "data")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["added"]) == {"curie.md", "ada.md", "nested.html", "slashes.html"}
    failed = result["failed"]
    assert set(failed) == {"bomb.pdf", "bomb.docx", "xml-bomb.docx", "binary.txt", "oversized.md", "nul.md"}
    expected = {"bomb.pdf": "PDF bomb", "bomb.docx": "zip bomb", "xml-bomb.docx": "zip bomb",
                "binary.txt": "binary data", "oversized.md": "max_file_bytes", "nul.md": "NUL bytes"}
    for name, words in expected.items():
        assert name in failed[name] and words in failed[name], failed[name]
    assert result["hits"] == ["curie.md"]
    print(f"hostile folder: sync {result['seconds']:.1f} s, peak RSS {result['peak_mb']:.0f} MB "
          f"({result['rss_open_mb']:.0f} MB after opening)")
    assert result["seconds"] < 60, result
    assert result["peak_mb"] - result["rss_open_mb"] < 400, result  # the bombs expand to GBs and hours if let


def test_a_chunked_upload_without_length_is_refused_before_it_is_read(service) -> None:
    """Without Content-Length the form parser would spool any amount to a temp file before our size
    check; such uploads get 411 at once (with a length, the HTTP server reads no more than it says)."""
    client = TestClient(create_app(service, with_ui=False))
    sent = []

    def body():
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n\r\n'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 100_000
        yield b"\r\n--XyZ--\r\n"

    before = files_under(service.folder())
    r = client.post("/v1/documents", content=body(), headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 411 and "Content-Length" in r.json()["error"]["message"]
    assert len(sent) < 100 and files_under(service.folder()) == before


def test_gradio_file_route_serves_nothing_from_the_folder_or_outside(service, tmp_path: Path) -> None:
    """Without login (the loopback default), Gradio's file route still serves neither the knowledge
    folder (documents are shown from the index, never read from disk by the page) nor anything else."""
    folder = service.folder()
    (folder / "link.md").symlink_to("/etc/passwd")
    client = TestClient(create_app(service, with_ui=True))
    for path in ("/etc/passwd", "%2Fetc%2Fpasswd", "../../../../etc/passwd", f"{folder}/curie.md", f"{folder}/link.md"):
        r = client.get(f"/gradio_api/file={path}")
        assert r.status_code in (403, 404), (path, r.status_code)
        assert b"root:" not in r.content and b"radium" not in r.content
