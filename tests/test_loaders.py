"""Loaders on small real files: encodings, binary and empty input, size limits, corrupt and hostile
PDF/DOCX/HTML, and the headings of Markdown, reStructuredText, HTML, DOCX and Python."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest

from knowledge.errors import DocumentError
from knowledge.loaders import SUPPORTED_SUFFIXES, effective_suffix, load_document
from knowledge.paths import suffix_of
from knowledge.types import RawDocument

LIMIT = 1_000_000


def load(path: Path, max_bytes: int = LIMIT, doc_id: str | None = None):
    doc_id = doc_id or path.name
    return load_document(RawDocument(doc_id, path.read_bytes(), suffix_of(doc_id)), max_bytes)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def titles(doc) -> list[tuple[int, str]]:
    return [(level, title) for _, level, title in doc.headings]


def assert_offsets_point_at_titles(doc) -> None:
    for offset, _, title in doc.headings:
        assert doc.text[offset:].lstrip("=-*#~^\"' \n").startswith(title.split()[0])


# ---------------------------------------------------------------- suffixes


def test_effective_suffix_unwraps_text_copies_of_markup():
    assert effective_suffix("faq/general.rst.txt") == ".rst"
    assert effective_suffix("notes/readme.md.txt") == ".md"
    assert effective_suffix("notes/plain.txt") == ".txt"
    assert effective_suffix("src/Main.PY") == ".py"
    assert effective_suffix("Makefile") == ""


def test_supported_suffixes_cover_the_formats():
    for suffix in ".txt .md .markdown .rst .py .js .tsx .json .yaml .cs .html .htm .pdf .docx".split():
        assert suffix in SUPPORTED_SUFFIXES


def test_rst_txt_is_loaded_as_restructured_text(tmp_path):
    (tmp_path / "faq").mkdir()
    path = write(tmp_path, "faq/general.rst.txt", b"Title\n=====\n\nBody.\n\nPart\n----\n\nMore.\n")
    doc = load(path, doc_id="faq/general.rst.txt")
    assert titles(doc) == [(1, "Title"), (2, "Part")]


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = write(tmp_path, "data.xyz", b"hello")
    with pytest.raises(DocumentError, match=r"'\.xyz' is not supported.*\.docx.*\.md"):
        load(path)


# ---------------------------------------------------------------- text decoding


def test_utf8_text_is_the_file_itself_with_crlf_normalized(tmp_path):
    raw = "Grüße\r\n\r\nzweiter Absatz\rmit CR\n".encode()
    doc = load(write(tmp_path, "a.txt", raw))
    assert doc.text == "Grüße\n\nzweiter Absatz\rmit CR\n"
    assert doc.headings == ()


def test_utf8_bom_is_dropped(tmp_path):
    doc = load(write(tmp_path, "a.md", b"\xef\xbb\xbf# Title\n\ntext\n"))
    assert doc.text == "# Title\n\ntext\n"
    assert doc.headings == ((0, 1, "Title"),)


def test_latin1_file_is_detected(tmp_path):
    text = (
        "Le café de la gare était fermé, alors nous sommes allés à la brasserie près du musée.\n"
        "Là, le garçon nous a servi une crème brûlée et un thé très chaud. Quelle soirée agréable!\n"
    )
    doc = load(write(tmp_path, "fr.txt", text.encode("latin-1")))
    assert doc.text == text


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-16-le"])
def test_utf16_with_bom(tmp_path, codec):
    text = "Grüße aus Köln\n\nZweiter Absatz.\n"
    data = text.encode(codec) if codec == "utf-16" else ("\ufeff" + text).encode(codec)
    assert load(write(tmp_path, "de.txt", data)).text == text


def test_binary_with_text_extension_is_refused(tmp_path):
    path = write(tmp_path, "image.txt", bytes(range(256)) * 20)
    with pytest.raises(DocumentError, match="image.txt looks like binary data, not text.*NUL.*sources.folder.ignore"):
        load(path)


def test_binary_without_nul_bytes_is_refused(tmp_path):
    data = random.Random(0).randbytes(5000).replace(b"\x00", b"\x01")
    with pytest.raises(DocumentError, match="looks like binary data"):
        load(write(tmp_path, "noise.md", data))


def test_text_full_of_control_characters_is_refused(tmp_path):
    with pytest.raises(DocumentError, match="looks like binary data.*control characters"):
        load(write(tmp_path, "ctl.txt", b"ab\x01\x02\x03\x1b" * 200))


@pytest.mark.parametrize("data", [b"", b"  \n\n\t\n", b"\xef\xbb\xbf"])
def test_empty_file_is_refused(tmp_path, data):
    with pytest.raises(DocumentError, match=r"empty.txt is empty; add text or remove it"):
        load(write(tmp_path, "empty.txt", data))


def test_oversized_file_names_size_limit_and_config_key(tmp_path):
    path = write(tmp_path, "big.txt", b"x" * 2001)
    with pytest.raises(DocumentError, match=r"2,001 bytes.*2,000 bytes.*sources\.max_file_bytes"):
        load(path, max_bytes=2000)


# ---------------------------------------------------------------- Markdown


def test_markdown_headings_skip_fenced_code_and_front_matter(tmp_path):
    text = (
        "---\ntitle: front\n---\n"
        "# Guide\n\nIntro.\n\n"
        "```python\n# not a heading\nx = 1\n```\n\n"
        "## Install ##\n\n"
        "~~~~\n## also code\n~~~\n## still code\n~~~~\n\n"
        "    # indented code\n\n"
        "#hashtag is not a heading\n\n"
        "Usage\n-----\n\nRun it.\n\n"
        "### Deep\n"
    )
    doc = load(write(tmp_path, "guide.md", text.encode()))
    assert doc.text == text
    assert titles(doc) == [(1, "Guide"), (2, "Install"), (2, "Usage"), (3, "Deep")]
    assert_offsets_point_at_titles(doc)


# ---------------------------------------------------------------- reStructuredText


def test_rst_levels_follow_first_appearance_of_adornments(tmp_path):
    text = (
        "=======\nManual\n=======\n\n"
        "Intro paragraph.\n\n"
        ":mod:`json` --- JSON\n====================\n\n"
        "Some text::\n\n    Indented\n    --------\n\n"
        "Details\n-------\n\n"
        "More\n====\n\n"
        "table:\n\n=====  =====\nA      B\n=====  =====\n"
    )
    doc = load(write(tmp_path, "manual.rst", text.encode()))
    assert doc.text == text
    assert titles(doc) == [(1, "Manual"), (2, "json --- JSON"), (3, "Details"), (2, "More")]
    assert [text[o : o + 7] for o, _, _ in doc.headings] == ["=======", ":mod:`j", "Details", "More\n=="]


# ---------------------------------------------------------------- code


def test_python_top_level_definitions_are_headings(tmp_path):
    text = 'import os\n\n\n@cache\n@other(1)\ndef f():\n    def inner():\n        pass\n\n\nclass A:\n    x = 1\n\n\nasync def g():\n    pass\n'
    doc = load(write(tmp_path, "mod.py", text.encode()))
    assert doc.text == text
    assert titles(doc) == [(1, "def f"), (1, "class A"), (1, "def g")]
    assert text[doc.headings[0][0] :].startswith("@cache\n@other(1)\ndef f")


def test_other_code_is_plain_text(tmp_path):
    text = '{"a": [1, 2, 3]}\n'
    doc = load(write(tmp_path, "x.json", text.encode()))
    assert (doc.text, doc.headings) == (text, ())


# ---------------------------------------------------------------- HTML


def test_html_becomes_clean_paragraphs_with_headings(tmp_path):
    html = """<!doctype html><html><head><title>T</title><style>p{color:red}</style></head>
<body><header>Site banner</header><nav><a href="/">Home</a></nav>
<main><article><header><h1>Real  <em>Title</em></h1></header>
<p>First &amp; foremost,   a
paragraph.</p><script>var x = "<p>no</p>";</script><noscript>enable js</noscript>
<div role="navigation"><div>menu <div>deeper</div></div> still menu</div>
<h2>Part two<a class="headerlink" href="#two">¶</a></h2><div>Block one</div><div>Block <b>two</b><br>next line</div>
<ul><li>one</li><li>two</li></ul><pre>  code
   kept</pre></article></main><footer>Copyright</footer></body></html>"""
    doc = load(write(tmp_path, "page.html", html.encode()))
    assert doc.text == (
        "Real Title\n\nFirst & foremost, a paragraph.\n\nPart two\n\nBlock one\n\nBlock two\nnext line\n\n"
        "one\ntwo\n\n  code\n   kept"
    )
    assert doc.headings == ((0, 1, "Real Title"), (doc.text.index("Part two"), 2, "Part two"))


def test_html_meta_charset_is_honoured(tmp_path):
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>Café crème</p></body></html>'
    assert load(write(tmp_path, "p.htm", html.encode("latin-1"))).text == "Café crème"


def test_deeply_nested_html_does_not_crash(tmp_path):
    html = "<div>" * 100_000 + "<h3>deep</h3>text" + "</div>" * 100_000 + "<nav>" + "<p>" * 100_000 + "</nav>"
    doc = load(write(tmp_path, "deep.html", html.encode()), max_bytes=5_000_000)
    assert doc.text == "deep\n\ntext"
    assert doc.headings == ((0, 3, "deep"),)


def test_html_with_only_scripts_is_empty(tmp_path):
    with pytest.raises(DocumentError, match="is empty"):
        load(write(tmp_path, "s.html", b"<html><script>x()</script><nav>menu</nav></html>"))


# ---------------------------------------------------------------- PDF


def pdf_escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, one text line per string, Helvetica; written by hand with a correct xref."""
    n = len(pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        ops = "".join(f"({pdf_escape(line)}) Tj T* " for line in lines)
        content = f"BT /F1 12 Tf 14 TL 72 720 Td {ops}ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_pages_are_separated_by_blank_lines(tmp_path):
    data = make_pdf([["Hello PDF world.", "Second line."], [], ["Page three (last)."]])
    doc = load(write(tmp_path, "doc.pdf", data))
    assert doc.text == "Hello PDF world.\nSecond line.\n\nPage three (last)."
    assert doc.headings == ()


def test_pdf_without_text_layer_asks_for_ocr(tmp_path):
    with pytest.raises(DocumentError, match="no text layer.*OCR"):
        load(write(tmp_path, "scan.pdf", make_pdf([[]])))


@pytest.mark.parametrize(
    "data", [b"this is not a pdf", b"%PDF-1.4\n" + random.Random(1).randbytes(3000), make_pdf([["x"]])[:60]]
)
def test_corrupt_pdf_reports_the_parser_reason(tmp_path, data):
    with pytest.raises(DocumentError, match=r"bad.pdf could not be read as a PDF \(\w+"):
        load(write(tmp_path, "bad.pdf", data))


# ---------------------------------------------------------------- DOCX


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Report", 0)
    document.add_paragraph("Opening paragraph.")
    document.add_paragraph("")
    document.add_heading("Findings", 1)
    document.add_paragraph("We found things.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([["Name", "Value"], ["alpha", "1"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("Detail", 2)
    document.add_paragraph("Small print.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_paragraphs_tables_and_heading_styles(tmp_path):
    doc = load(write(tmp_path, "report.docx", make_docx()))
    assert doc.text == (
        "Report\n\nOpening paragraph.\n\nFindings\n\nWe found things.\n\nName | Value\n\nalpha | 1\n\n"
        "Detail\n\nSmall print."
    )
    assert titles(doc) == [(1, "Report"), (1, "Findings"), (2, "Detail")]
    assert_offsets_point_at_titles(doc)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "plain zip"])
def test_corrupt_docx_reports_the_reason(tmp_path, kind):
    if kind == "garbage":
        data = b"PK\x03\x04 definitely not a docx"
    elif kind == "truncated":
        data = make_docx()[:2000]
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("hello.txt", "hi")
        data = buffer.getvalue()
    with pytest.raises(DocumentError, match=r"bad.docx (is not a valid \.docx|could not be read as a Word document)"):
        load(write(tmp_path, "bad.docx", data))


def test_docx_zip_bomb_is_refused_before_parsing(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(make_docx())) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info, source.read(info))
        out.writestr("word/media/bomb.bin", b"\0" * 8_000_000)
    data = buffer.getvalue()
    max_bytes = 200_000
    assert len(data) < max_bytes
    with pytest.raises(DocumentError, match=r"unpacks to 8,\d{3},\d{3} bytes.*zip bomb.*sources\.max_file_bytes"):
        load(write(tmp_path, "bomb.docx", data), max_bytes=max_bytes)
