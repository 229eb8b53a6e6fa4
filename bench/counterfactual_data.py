"""Build the counterfactual QA dev set (NQ-Swap style, Longpre et al. 2021) and its ordinary twin.

Source: the shortened English Wikipedia dump in gensim's test data (107 articles of famous
topics) plus two untouched real news corpora from the same folder (lee_background.cor, 300
articles; lee.cor, 50 articles) as distractors. Nothing here is written by this project except
the edits and the questions, which live in ``bench/data/enwiki_counterfactual_edits.json``.

    .venv/bin/python bench/counterfactual_data.py --dest .dev-data/enwiki-cf [--gensim-wheel PATH]

writes ``DEST/original/`` (the articles as plain markdown, ``enwiki/<Title>.md``, and the
distractors, ``news/lee-*.txt``) and ``DEST/counterfactual/`` (the same, with each edited fact
replaced at every mention in its article; an article may carry several edits, applied in spec
order, each with its own question), then the query files from the spec:

- ``bench/data/enwiki_counterfactual.jsonl`` (answers = the substituted value, original = the
  replaced one) and ``_dev`` / ``_test`` splits of it;
- ``bench/data/enwiki_qa.jsonl`` (the same questions over the original corpus, answers = the
  original value) and its ``_dev`` / ``_test`` splits;
- ``_known_dev`` / ``_known_test`` variants of both: only the edits marked ``"known": true`` in
  the spec, facts the closed-book generator states correctly, so the document really contradicts
  the model's memory (the others mostly measure facts the small model never knew).

Every invariant is checked and a violation fails loudly: the original value occurs in the
original article, it occurs nowhere in the counterfactual article (whole word, any case), the
replacement occurs in the counterfactual article and nowhere in the original one, and so on
(with several edits of one article: no edit may touch another's value, every replacement survives
the later edits and every original is gone from the final article).
The output is deterministic (same wheel, same spec -> same bytes).
"""

from __future__ import annotations

import argparse
import bz2
import html
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
SPEC = DATA / "enwiki_counterfactual_edits.json"
GENSIM_VERSION = "4.3.3"
TEST_DATA = "gensim/test/test_data/"
ENWIKI = TEST_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DISTRACTORS = {"lee_background.cor": "lee-background", "lee.cor": "lee-test"}
TYPES = {"year", "date", "place", "person", "number", "name"}
SPLITS = {"dev", "test"}

# Sections that are lists of links and citations, not prose.
DROP_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography",
                 "sources", "citations", "footnotes", "notes and references", "works cited", "general",
                 "general references", "cited sources", "primary sources", "secondary sources", "online",
                 "explanatory notes", "reference notes", "external link", "notes and sources", "literature"}
DROP_LINK_PREFIXES = ("file:", "image:", "category:", "media:", "wikt:", "s:", "commons:", "wikipedia:", "w:")
INTERWIKI = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:", re.I)


class Invalid(Exception):
    pass


# ---------------------------------------------------------------- fetching the source files

def gensim_archive(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    cmd = [sys.executable, "-m", "pip", "download", f"gensim=={GENSIM_VERSION}", "--no-deps", "-d", str(tmp), "-q"]
    subprocess.run(cmd, check=True)
    found = sorted(tmp.glob("gensim-*"))
    if not found:
        raise SystemExit(f"pip download left no gensim archive in {tmp}")
    return found[0]


def read_members(archive: Path) -> dict[str, bytes]:
    """The enwiki dump and the distractor corpora from a gensim wheel (zip) or sdist (tar)."""
    wanted = [ENWIKI] + [TEST_DATA + name for name in DISTRACTORS]
    out: dict[str, bytes] = {}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = {n.split("/", 1)[-1] if not n.startswith("gensim/") else n: n for n in z.namelist()}
            for w in wanted:
                if w in names:
                    out[w] = z.read(names[w])
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                tail = m.name[m.name.find("gensim/"):] if "gensim/" in m.name else ""
                if tail in wanted and m.isfile():
                    out[tail] = t.extractfile(m).read()
    missing = [w for w in wanted if w not in out]
    if missing:
        raise SystemExit(f"{archive} lacks {missing}")
    return out


# ---------------------------------------------------------------- wiki markup -> plain markdown

def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove every balanced open_ ... close span (nested ones included)."""
    out, depth, i, start = [], 0, 0, 0
    n, lo, lc = len(text), len(open_), len(close)
    while i < n:
        if text.startswith(open_, i):
            if depth == 0:
                out.append(text[start:i])
            depth += 1
            i += lo
        elif depth and text.startswith(close, i):
            depth -= 1
            i += lc
            if depth == 0:
                start = i
        else:
            i += 1
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


def _links(text: str) -> str:
    """[[target|label]] -> label; file, category and interwiki links are dropped with their captions."""
    out, i, n = [], 0, len(text)
    while i < n:
        j = text.find("[[", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        depth, k = 0, j
        while k < n:
            if text.startswith("[[", k):
                depth += 1
                k += 2
            elif text.startswith("]]", k):
                depth -= 1
                k += 2
                if depth == 0:
                    break
            else:
                k += 1
        inner = text[j + 2:k - 2] if depth == 0 else text[j + 2:]
        target = inner.split("|", 1)[0].strip().lower()
        if not (target.startswith(DROP_LINK_PREFIXES) or INTERWIKI.match(target)):
            label = _links(inner).rsplit("|", 1)[-1] if "|" in inner else _links(inner)
            out.append(label.lstrip(":"))
        i = k if depth == 0 else n
    return "".join(out)


def _tables(text: str) -> str:
    lines, depth = [], 0
    for line in text.split("\n"):
        s = line.strip()
        if s.startswith("{|"):
            depth += 1
            continue
        if depth and s.startswith("|}"):
            depth -= 1
            continue
        if not depth:
            lines.append(line)
    return "\n".join(lines)


def wiki_to_markdown(title: str, wiki: str) -> str:
    t = re.sub(r"<!--.*?-->", "", wiki, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", "", t, flags=re.I)
    t = re.sub(r"<ref[^>]*>.*?</ref\s*>", "", t, flags=re.I | re.S)
    t = re.sub(r"<(gallery|math|timeline|imagemap|score|syntaxhighlight|source|pre)[^>]*>.*?</\1\s*>", "", t,
               flags=re.I | re.S)
    t = re.sub(r"\{\{\s*(?:spaced ndash|snd|ndash|spnd|sndash)\s*\}\}", " – ", t, flags=re.I)
    t = re.sub(r"\{\{\s*(?:mdash|spaced mdash|dash)\s*\}\}", " — ", t, flags=re.I)
    t = _strip_nested(t, "{{", "}}")
    t = _tables(t)
    t = _strip_nested(t, "{|", "|}")
    t = _links(t)
    t = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", t)
    t = re.sub(r"\[(?:https?:)?//[^\s\]]+\]", "", t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"<br\s*/?>", " ", t, flags=re.I)
    t = re.sub(r"</?[a-zA-Z][^>]*>", "", t)
    t = html.unescape(t).replace("\u00a0", " ")
    out, skip = [f"# {title}", ""], False
    for raw in t.split("\n"):
        line = raw.strip()
        m = re.match(r"^(={2,6})\s*(.*?)\s*\1$", line)
        if m:
            name = m.group(2).strip()
            skip = name.lower() in DROP_SECTIONS
            if not skip:
                out += ["", "#" * len(m.group(1)) + " " + name, ""]
            continue
        if skip or line.startswith(("__", "|", "!")):
            continue
        if line and line[0] in "*#;:":
            body = line.lstrip("*#;: ").strip()
            if body:
                out.append("- " + body)
            continue
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "( )" left by removed templates
        line = re.sub(r"\(\s*[,;]\s*", "(", line)  # "(; born ..." likewise
        line = re.sub(r"[ \t]{2,}", " ", line).replace(" ,", ",").replace(" .", ".")
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\n#{2,6} [^\n]*\n+(?=#{2,6} |\Z)", "\n", text)  # empty sections
    text = re.sub(r"\n#{2,6} [^\n]*\n+(?=#{2,6} |\Z)", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return text


def articles(dump: bytes) -> dict[str, str]:
    """Title -> plain markdown, for the main-namespace articles that are not redirects."""
    out: dict[str, str] = {}
    for _, el in ET.iterparse(bz2.open(__import__("io").BytesIO(dump))):
        if not el.tag.endswith("}page"):
            continue
        ns, title = el.findtext("{*}ns"), el.findtext("{*}title") or ""
        text = el.findtext(".//{*}text") or ""
        if ns == "0" and el.find("{*}redirect") is None and not text.lstrip().lower().startswith("#redirect"):
            out[title] = wiki_to_markdown(title, text)
        el.clear()
    return out


def filename(title: str) -> str:
    return "enwiki/" + title.replace("/", "-") + ".md"


# ---------------------------------------------------------------- the edits

def word(value: str, flags: int = 0) -> re.Pattern:
    return re.compile(r"(?<![\w])" + re.escape(value) + r"(?![\w])", flags)


def check_spec(spec: list[dict], docs: dict[str, str]) -> None:
    seen_q = set()
    for n, e in enumerate(spec, 1):
        where = f"edit {n} ({e.get('title')!r})"
        for key in ("title", "original", "replacement", "question", "type", "split"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise Invalid(f"{where}: {key!r} must be a non-empty string")
        if e["type"] not in TYPES:
            raise Invalid(f"{where}: type {e['type']!r} not in {sorted(TYPES)}")
        if e["split"] not in SPLITS:
            raise Invalid(f"{where}: split {e['split']!r} not in {sorted(SPLITS)}")
        if e["title"] not in docs:
            raise Invalid(f"{where}: no such article")
        if e["question"] in seen_q:
            raise Invalid(f"{where}: duplicate question")
        seen_q.add(e["question"])
        if "known" in e and not isinstance(e["known"], bool):
            raise Invalid(f"{where}: 'known' must be true or false")
        extra = e.get("extra", [])
        if not (isinstance(extra, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and x
                                                                                          for x in p) for p in extra)):
            raise Invalid(f"{where}: 'extra' must be a list of [original, replacement] pairs")
        o, r = e["original"], e["replacement"]
        if o.lower() in r.lower() or r.lower() in o.lower():
            raise Invalid(f"{where}: {o!r} and {r!r} string-match each other")


def apply_edit(e: dict, text: str, source: str | None = None) -> str:
    """Replace e's fact in text; source is the untouched article (text itself for a first edit)."""
    source = text if source is None else source
    o, r = e["original"], e["replacement"]
    where = f"{e['title']!r}: {o!r} -> {r!r}"
    if not word(o).search(source):
        raise Invalid(f"{where}: the original value is not in the original article")
    if not word(o).search(text):
        raise Invalid(f"{where}: an earlier edit of the article removed the original value")
    if word(r, re.I).search(source) or word(r, re.I).search(text):
        raise Invalid(f"{where}: the replacement already occurs in the article")
    new = word(o).sub(r, text)
    for eo, er in e.get("extra", []):  # the same fact under another name: "Tranquility Base" for "Sea of Tranquility"
        if word(er, re.I).search(source) or word(er, re.I).search(text):
            raise Invalid(f"{where}: the extra replacement {er!r} already occurs in the article")
        new = word(eo).sub(er, new)
    check_edited(e, new)
    return new


def check_edited(e: dict, new: str) -> None:
    where = f"{e['title']!r}: {e['original']!r} -> {e['replacement']!r}"
    for variant in [e["original"]] + e.get("also_original", []):
        if word(variant, re.I).search(new):
            raise Invalid(f"{where}: {variant!r} still occurs in the counterfactual article")
    for eo, _ in e.get("extra", []):  # case-sensitive: "peace and tranquility" is no name of the fact
        if word(eo).search(new):
            raise Invalid(f"{where}: {eo!r} still occurs in the counterfactual article")
    for a in [e["replacement"]] + [er for _, er in e.get("extra", [])]:
        if not word(a).search(new):
            raise Invalid(f"{where}: {a!r} is not in the counterfactual article (a later edit replaced it?)")
    for a in e.get("also", []):
        if a.lower() not in new.lower():
            raise Invalid(f"{where}: answer {a!r} is not in the counterfactual article")


def apply_edits(spec: list[dict], original: dict[str, str]) -> dict[str, str]:
    """The counterfactual corpus: each article's edits in spec order, all checked on the final text."""
    counter = dict(original)
    by_file: dict[str, list[dict]] = {}
    for e in spec:
        by_file.setdefault(filename(e["title"]), []).append(e)
    for f, edits in by_file.items():
        text = original[f]
        for e in edits:
            text = apply_edit(e, text, original[f])
        for e in edits:  # a later edit must neither bring back an earlier original nor erase its replacement
            check_edited(e, text)
        values = [v.lower() for e in edits for v in (e["original"], e["replacement"])]
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                if a in b or b in a:
                    raise Invalid(f"{f}: the values {a!r} and {b!r} of two edits string-match each other")
        counter[f] = text
    return counter


def check_queries(spec: list[dict], original: dict[str, str], counter: dict[str, str]) -> None:
    for e in spec:
        f = filename(e["title"])
        cf, orig = counter[f], original[f]
        for a in [e["replacement"]] + e.get("also", []):
            if a.lower() not in cf.lower():
                raise Invalid(f"{f}: answer {a!r} not in the counterfactual gold file")
        for o in [e["original"]] + e.get("also_original", []):
            if word(o, re.I).search(cf):
                raise Invalid(f"{f}: original {o!r} occurs in the counterfactual gold file")
            if o.lower() not in orig.lower():
                raise Invalid(f"{f}: original {o!r} not in the original gold file")
        if e["original"].lower() in e["question"].lower() or e["replacement"].lower() in e["question"].lower():
            raise Invalid(f"{f}: the question gives the answer away: {e['question']!r}")
        for other in spec:  # a question may not rest on a fact another edit of its article changed
            if other is e or other["title"] != e["title"]:
                continue
            for v in [other["original"], other["replacement"]] + [x for pair in other.get("extra", []) for x in pair]:
                if word(v, re.I).search(e["question"]):
                    raise Invalid(f"{f}: the question {e['question']!r} names {v!r}, a value of another edit "
                                  f"({other['original']!r} -> {other['replacement']!r}) of the same article")
    edited = {filename(e["title"]) for e in spec}
    if set(counter) != set(original):
        raise Invalid("the two corpora do not hold the same files")
    for rel, text in counter.items():
        if (text != original[rel]) != (rel in edited):
            raise Invalid(f"{rel}: {'unchanged although edited' if rel in edited else 'changed although not edited'}")


def query_rows(spec: list[dict]) -> tuple[list[dict], list[dict]]:
    cf, qa = [], []
    for n, e in enumerate(spec, 1):
        base = {"question": e["question"], "gold": [filename(e["title"])]}
        tail = {"type": e["type"], "split": e["split"], "known": bool(e.get("known", False))}
        cf.append({"id": f"cf-{n}", **base, "answers": [e["replacement"]] + e.get("also", []),
                   "original": [e["original"]] + e.get("also_original", []), **tail})
        qa.append({"id": f"qa-{n}", **base, "answers": [e["original"]] + e.get("also_original", []), **tail})
    return cf, qa


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_corpus(dest: Path, docs: dict[str, str]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for rel, text in sorted(docs.items()):
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", required=True, help="folder for original/ and counterfactual/")
    ap.add_argument("--gensim-wheel", help="a gensim wheel or sdist (default: pip download gensim==%s)" % GENSIM_VERSION)
    ap.add_argument("--spec", default=str(SPEC))
    ap.add_argument("--queries-dir", default=str(DATA), help="where the .jsonl files go")
    ap.add_argument("--show", metavar="TITLE", help="print one cleaned article and exit")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        members = read_members(gensim_archive(args.gensim_wheel, Path(tmp)))
    arts = articles(members[ENWIKI])
    if args.show:
        sys.stdout.write(arts[args.show])
        return 0
    original: dict[str, str] = {filename(t): text for t, text in arts.items()}
    for name, prefix in DISTRACTORS.items():
        # the news corpora are Latin-1 ("\xa3" is a pound sign)
        lines = [ln.strip() for ln in members[TEST_DATA + name].decode("latin-1").splitlines() if ln.strip()]
        for i, line in enumerate(lines, 1):
            original[f"news/{prefix}-{i:03d}.txt"] = line + "\n"

    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    try:
        check_spec(spec, arts)
        counter = apply_edits(spec, original)
        check_queries(spec, original, counter)
    except Invalid as exc:
        print(f"counterfactual_data: INVALID: {exc}", file=sys.stderr)
        return 1

    dest = Path(args.dest)
    write_corpus(dest / "original", original)
    write_corpus(dest / "counterfactual", counter)
    cf, qa = query_rows(spec)
    qdir = Path(args.queries_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    for stem, rows in (("enwiki_counterfactual", cf), ("enwiki_qa", qa)):
        write_jsonl(qdir / f"{stem}.jsonl", rows)
        for split in sorted(SPLITS):
            write_jsonl(qdir / f"{stem}_{split}.jsonl", [r for r in rows if r["split"] == split])
            write_jsonl(qdir / f"{stem}_known_{split}.jsonl", [r for r in rows if r["split"] == split and r["known"]])
    types: dict[str, int] = {}
    for e in spec:
        types[e["type"]] = types.get(e["type"], 0) + 1
    splits = {s: sum(1 for e in spec if e["split"] == s) for s in sorted(SPLITS)}
    known = {s: sum(1 for e in spec if e["split"] == s and e.get("known")) for s in sorted(SPLITS)}
    print(f"{len(original)} documents ({len(arts)} articles, {len({e['title'] for e in spec})} edited), "
          f"{len(spec)} edits {types}, splits {splits}, known {known}")
    print(f"wrote {dest / 'original'}, {dest / 'counterfactual'} and "
          f"{qdir}/enwiki_{{counterfactual,qa}}[_known][_dev|_test].jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
