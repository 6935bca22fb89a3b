"""Advisory-style training texts (issue #18): short vulnerability advisories, developer-facing
security advice, and release notes of the same register, offline.

The default model misses cyber text written as advisories and developer documentation, and calls
ordinary release notes cyber (models/ood/README.md). This collector draws real text of those
kinds from sources that are NOT reserved for evaluation:

  cyber    RustSec advisory database (title + description of each advisory), PyPA advisory
           database (OSV summary/details), Flask's "Security Considerations" page, bandit's
           explanations of insecure patterns, the Python 3.11 library docs' security sections,
           security fixes in the Pallets projects' CHANGES.rst
  not      the other CHANGES.rst items of Flask, Werkzeug, Jinja and Click; RustSec
           "unmaintained" notices that carry no security word

Reserved for evaluation, never read here: Django (PyPA's `django` entries are dropped: they are
Django's security archive), Go vulndb, safety-db and the rest of the list in models/ood/README.md.
As a second guard, a candidate sharing half its 6-word shingles with any text of
models/ood/texts.jsonl is dropped (CVE descriptions recur across databases).

Download (exact versions and commits: tools/train/SOURCES.md), then:

    python tools/train/collect_advisories.py --sources /tmp/adv-src \\
        --rustsec RUSTSEC_GIT_DIR --pypa PYPA_GIT_DIR --out /work/cache/texts_advisories.jsonl
    ... --sample 25 --out /tmp/read.jsonl      (25 random texts per source, for reading)

SOURCES holds the sdists (*.tar.gz, read in place) and deb/python3.11-doc_*.deb (unpacked into
SOURCES/x by collect_broad.unpack). The two advisory databases are read from git directories
(bare mirrors are fine) at the pinned commits with `git archive`. Output lines and conventions
are those of collect_broad.py: {"id", "text", "label", "category", "source", "package",
"version", "path", "license"}, ids "<source>-<sha1(text)[:10]>", 60-800 characters,
de-duplicated after lower-casing and dropping punctuation, per-source quotas drawn with a fixed
seed, shuffled with a fixed seed. Python standard library only (plus the git and dpkg-deb
commands); deterministic.
"""
import argparse
import ast
import collections
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile

from collect_broad import (CHANGELOG_CYBER, CYBER_CUE, SECURITY_WORDS, clean, cut, draw_by_quota,
                           fits, html_text_paragraphs_keep_code, prose, read_gz, report,
                           rst_text_paragraphs, text_key, unpack, write)

SEED = 20261130
HERE = os.path.dirname(os.path.abspath(__file__))
OOD_TEXTS = os.path.join(HERE, "..", "..", "models", "ood", "texts.jsonl")

RUSTSEC_COMMIT = "bf5c0d245a92671908518d7e765914d437954ed6"  # 2026-08-21
PYPA_COMMIT = "3ccb612573e2511ab5cad7dafecd838605c80cda"     # 2024-10-10
SDISTS = {  # file name -> (package, version, licence)
    "flask-3.1.2.tar.gz": ("flask", "3.1.2", "BSD-3-Clause"),
    "werkzeug-3.1.3.tar.gz": ("werkzeug", "3.1.3", "BSD-3-Clause"),
    "jinja2-3.1.6.tar.gz": ("jinja2", "3.1.6", "BSD-3-Clause"),
    "click-8.2.1.tar.gz": ("click", "8.2.1", "BSD-3-Clause"),
    "bandit-1.8.6.tar.gz": ("bandit", "1.8.6", "Apache-2.0"),
}
PYDOC_LICENSE = "PSF-2.0 (Python documentation; debian/copyright of python3.11-doc)"

QUOTA = {
    # cyber
    "rustsec_advisory": 480,          # cyber_advisory
    "pypa_advisory": 450,             # cyber_advisory (also at most PER_PACKAGE per package)
    "flask_web_security": 100,        # cyber_advice
    "bandit_doc": 150,                # cyber_advice
    "python_doc_security": 150,       # cyber_advice
    "pallets_changelog_security": 100,  # cyber_changelog
    # not cyber
    "pallets_changelog_plain": 380,   # neg_release_notes
    "rustsec_notice": 170,            # neg_project_notice
}
PER_PACKAGE = 12
MALWARE_TEMPLATE = re.compile(r"removed from crates\.io for malicious code")
MALWARE_KEEP = 15

# An advisory must carry one of these to be labelled cyber: a reader of the text alone must see a
# security issue, not a plain bug (a panic, a wrong result). Narrower than CYBER_CUE: no bare
# "overflow" (a recursion stack overflow or an arithmetic overflow is a plain bug) and no
# "signature" (a function signature), but the memory-safety and web-vulnerability vocabulary.
ADVISORY_CUE = re.compile(
    r"(?i)(secur|vulnerab|attack|exploit|malicious|malware|password|passphrase|credential"
    r"|encrypt|decrypt|cipher|certificate|authenticat|authoriz|authoris|\btls\b|\bssl\b"
    r"|untrusted|injection|sandbox|privilege|\bcve-\d|intrus|unauthori|spoof|tamper|threat"
    r"|buffer overflow|heap[- ](based )?(buffer )?overflow|stack[- ]based buffer"
    r"|use[- ]after[- ]free"
    r"|double[- ]free|out[- ]of[- ]bounds|memory corruption|uninitiali[sz]ed memory"
    r"|arbitrary (code|command|file|memory)|remote code|code execution|denial[- ]of[- ]service"
    r"|\bdos\b|redos|\bxss\b|cross[- ]site|csrf|request forgery|path traversal|directory traversal"
    r"|timing (attack|side)|side[- ]channel|information (disclosure|leak|exposure)|\bleak"
    r"|sensitive (data|information)|confidential|integrity|bypass|hijack|backdoor|compromis"
    r"|smuggling|open redirect|\bssrf\b|xxe|deserializ|forged?\b|replay|nonce|\bhmac\b"
    r"|private key|secret key|signing key|phishing|typosquat|poisoning)")

# Identifiers (shell_injection, ssl.wrap_socket) name things; a cue inside one says nothing.
IDENTIFIER = re.compile(r"\S*[a-z0-9][_.][a-z0-9]\S*", re.I)
# A resource leak (memory, handles, file descriptors) is a plain bug, not an information leak.
RESOURCE_LEAK = re.compile(r"(?i)\b(memory|handles?|resources?|file descriptors?|fds?)\s+leak\w*"
                           r"|\bleak\w*\s+(of\s+)?(memory|handles?|resources?|file descriptors?)")
# A paragraph that continues the previous one reads as a fragment alone.
CONTINUATION = re.compile(r"(As well as|And|Or|But|Also|To (prevent|avoid|fix) this)\b")


def security_cue(text, advisory=False):
    """The rule's security cue for label 1, outside identifiers and resource-leak phrases:
    ADVISORY_CUE for an advisory, CYBER_CUE or ADVISORY_CUE for advice and changelogs."""
    text = RESOURCE_LEAK.sub(" ", IDENTIFIER.sub(" ", text))
    return bool(ADVISORY_CUE.search(text) or (not advisory and CYBER_CUE.search(text)))


def advice(text):
    """A developer-advice paragraph kept as 1: prose, not a continuation, brackets balanced
    (no code residue), with a security cue."""
    return (fits(text) and prose(text) and not CONTINUATION.match(text)
            and text.count("(") == text.count(")") and security_cue(text))


class Src:
    """Where a text comes from (the fields collect_broad.rec reads from a Deb)."""

    def __init__(self, package, version, license, folder=""):
        self.package, self.version, self.license, self.folder = package, version, license, folder


def rec(source, category, label, text, src, path, license=None):
    return {"source": source, "category": category, "label": label, "text": text,
            "package": src.package, "version": src.version, "path": path,
            "license": license or src.license}


def adv_prose(text):
    """Reads as advisory prose: sentences, mostly letters (version numbers allowed), no code
    blocks or links. Unlike collect_broad.prose, a lower-case start (a crate name) and type names
    such as Foo<T> or a::b are allowed: advisories name the API they are about."""
    letters = sum(c.isalpha() or c == " " for c in text)
    return (letters >= 0.7 * len(text) and text[-1:] in ".!?)\"'"
            and not re.search(r"[{}|$\\]|https?:|;$", text) and len(text.split()) >= 8)


def git_tree(git_dir, commit, *paths):
    """{path: text} of the files under paths at commit, via git archive (no work tree needed)."""
    data = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "--format=tar", commit,
                           *paths], check=True, capture_output=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name] = tar.extractfile(member).read().decode("utf-8", "replace")
    return dict(sorted(out.items()))


def markdown_paragraphs(text):
    """Prose paragraphs of Markdown: no code fences, headings, lists, quotes or tables; links
    become their text; inline code keeps its words."""
    text = re.sub(r"```.*?(```|$)", "\n\n", text, flags=re.S)
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        if not block.strip() or any(re.match(r"\s*([-*+] |\d+[.)] |#|>|\||    )", l)
                                    for l in lines):
            continue
        para = " ".join(l.strip() for l in lines)
        para = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", para)
        para = para.replace("`", "").replace("**", "").replace("__", "")
        out.append(clean(para))
    return out


def ood_guard():
    """6-word shingles of the evaluation texts: a candidate sharing half of its own is dropped."""
    shingles = set()
    with open(OOD_TEXTS, encoding="utf-8") as f:
        for line in f:
            shingles |= shingle(json.loads(line)["text"])
    return lambda text: (lambda s: bool(s) and len(s & shingles) >= 0.5 * len(s))(shingle(text))


def unseen_by_source(records, seen, in_eval):
    """`records` grouped by source, each text once after lower-casing and dropping punctuation
    (texts in `seen`, which this extends, count as taken), near-copies of evaluation texts
    (`in_eval`) dropped and counted on stderr."""
    by_source = collections.defaultdict(list)
    guarded = 0
    for record in records:
        key = text_key(record["text"])
        if key in seen:
            continue
        seen.add(key)
        if in_eval(record["text"]):
            guarded += 1
            continue
        by_source[record["source"]].append(record)
    print(f"dropped as near-copies of evaluation texts: {guarded}", file=sys.stderr)
    return by_source


def shingle(text):
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    return {" ".join(words[i:i + 6]) for i in range(max(0, len(words) - 5))}


# ---- RustSec --------------------------------------------------------------------------------

def rustsec(args):
    """RustSec advisories (crates/ and rust/): the title and the description's prose paragraphs,
    as one text cut at a sentence to 800 characters. Rule: withdrawn advisories dropped; an
    advisory (vulnerability, "unsound" or "notice") is 1 cyber_advisory only if the text has a
    security_cue, else dropped (a plain bug or API-misuse note); an "unmaintained" notice is
    0 neg_project_notice if it has no security word at all (SECURITY_WORDS), 1 if it has a
    security_cue, else dropped. Licence per advisory: its `license` field (CC-BY-4.0 for those
    imported from GHSA), else CC0-1.0. Removals of malicious crates ("X was removed from
    crates.io for malicious code", one template for dozens): MALWARE_KEEP of them, fixed seed."""
    src = Src("rustsec/advisory-db", RUSTSEC_COMMIT, "CC0-1.0")
    malware = []
    for path, text in git_tree(args.rustsec, RUSTSEC_COMMIT, "crates", "rust").items():
        m = re.match(r"\s*```toml\n(.*?)\n```\n(.*)", text, re.S)
        if not path.endswith(".md") or not m:
            continue
        meta, body = m.groups()
        if re.search(r"^withdrawn\s*=", meta, re.M):
            continue
        kind = re.search(r'^informational\s*=\s*"(\w+)"', meta, re.M)
        kind = kind.group(1) if kind else "vulnerability"
        lic = re.search(r'^license\s*=\s*"([^"]+)"', meta, re.M)
        heading = re.search(r"^# (.+)$", body, re.M)
        if not heading:
            continue
        title = clean(heading.group(1).replace("`", ""))
        rest = body[heading.end():]
        paras = [p for p in markdown_paragraphs(rest) if adv_prose(p)]
        if not paras:
            continue
        head = title if title[-1:] in ".!?" else title + "."
        text = cut(head + " " + " ".join(paras))
        if not text or not fits(text) or not adv_prose(text):
            continue
        license = lic.group(1) if lic else "CC0-1.0"
        if security_cue(text, advisory=True):
            r = rec("rustsec_advisory", "cyber_advisory", 1, text, src, path, license)
            if MALWARE_TEMPLATE.search(text):
                malware.append(r)
            else:
                yield r
        elif kind == "unmaintained" and not SECURITY_WORDS.search(text):
            yield rec("rustsec_notice", "neg_project_notice", 0, text, src, path, license)
    # Dozens of malicious-crate removals share one template; a few stand for them all.
    yield from random.Random(SEED + 2).sample(malware, min(MALWARE_KEEP, len(malware)))


# ---- PyPA advisory database -----------------------------------------------------------------

def yaml_scalar(text, key):
    """A top-level scalar of a PyYAML-dumped mapping (plain, quoted or block style); None if absent.
    Just enough YAML for the OSV files of the PyPA database, standard library only."""
    m = re.search(rf"^{key}:[ \t]*(.*)\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", text, re.M)
    if not m:
        return None
    first, more = m.group(1), m.group(2).rstrip("\n").split("\n") if m.group(2).strip() else []
    if first.startswith(("|", ">")):
        body = "\n".join(l[2:] if l.startswith("  ") else l.strip() for l in more).strip("\n")
        return body if first.startswith("|") else re.sub(r"(?<!\n)\n(?!\n)", " ", body)
    out = first
    for line in (l.strip() for l in more):
        if out.endswith("\\") and first.startswith('"'):  # escaped line break: no space
            out = out[:-1] + line
        elif line == "":
            out += "\n"
        else:
            out += line if out.endswith("\n") else " " + line
    out = out.strip()
    if out.startswith("'"):
        return out[1:-1].replace("''", "'")
    if out.startswith('"'):
        escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", " ": " ", "_": "\u00a0",
                   "0": "", "r": "\n", "N": "\u0085"}
        return re.sub(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)',
                      lambda e: chr(int(e.group(1)[1:], 16)) if len(e.group(1)) > 1
                      else escapes.get(e.group(1), e.group(1)), out[1:-1])
    return out


PYPA_TAIL = re.compile(r"(?im)^#+\s*(patches|workarounds?|references?|for more information"
                       r"|credits?|acknowledg|timeline|poc|proof of concept|reproduc|fix"
                       r"|remediation|resolution|mitigations?|patched|solution)\b.*")


def pypa(args):
    """PyPA advisories (vulns/<package>/*.yaml): the summary, when it is not just the start of the
    details, followed by the prose paragraphs of the details (Markdown; sections from "Patches",
    "Workarounds", "References", "Credits", "PoC" on are dropped), cut at a sentence to 800
    characters. Rule: 1 cyber_advisory if the text carries security_cue, else dropped (a CVE text
    that reads as a plain bug). Package `django` dropped (reserved: Django's security archive);
    withdrawn advisories dropped; at most PER_PACKAGE texts per package (fixed-seed draw), so
    TensorFlow's hundreds of advisories do not swamp the source."""
    src = Src("pypa/advisory-database", PYPA_COMMIT, "CC-BY-4.0")
    by_package = collections.defaultdict(list)
    for path, text in git_tree(args.pypa, PYPA_COMMIT, "vulns").items():
        package = path.split("/")[1]
        if (not path.endswith(".yaml") or package == "django"
                or re.search(r"^withdrawn:", text, re.M)):
            continue
        details = yaml_scalar(text, "details") or ""
        summary = clean(yaml_scalar(text, "summary") or "")
        details = PYPA_TAIL.split(details)[0]
        paras = [p for p in markdown_paragraphs(details) if adv_prose(p)]
        if not paras:
            continue
        body = " ".join(paras)
        head = ""
        if summary and len(summary.split()) >= 3 and summary.lower()[:40] not in body.lower():
            head = summary if summary[-1:] in ".!?" else summary + "."
            if not summary[:1].isupper():
                head = head[:1].upper() + head[1:]
        text = cut((head + " " + body).strip())
        if text and fits(text) and adv_prose(text) and security_cue(text, advisory=True):
            by_package[package].append(rec("pypa_advisory", "cyber_advisory", 1, text, src, path))
    rng = random.Random(SEED + 1)
    for package in sorted(by_package):
        items = by_package[package]
        yield from (rng.sample(items, PER_PACKAGE) if len(items) > PER_PACKAGE else items)


# ---- sdists: Flask, the Pallets changelogs, bandit ------------------------------------------

def sdist_files(args, name, pattern):
    package, version, license = SDISTS[name]
    src = Src(package, version, license)
    with tarfile.open(os.path.join(args.sources, name)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.isfile() and re.fullmatch(pattern, rel):
                yield src, rel, tar.extractfile(member).read().decode("utf-8", "replace")


def flask_web_security(args):
    """Flask's docs/web-security.rst ("Security Considerations"): prose paragraphs. Rule: 1
    cyber_advice if the paragraph passes advice() (prose with a security_cue, not a
    continuation fragment), else dropped (headings, plumbing, how-to without a security word)."""
    for src, rel, text in sdist_files(args, "flask-3.1.2.tar.gz", r"docs/web-security\.rst"):
        for para in rst_text_paragraphs(text):
            para = cut(para)
            if para and advice(para):
                yield rec("flask_web_security", "cyber_advice", 1, para, src, rel)


def changes_items(text):
    """Bullet items of a Pallets CHANGES.rst ("-   item", continuation lines indented), with the
    reST roles reduced to their text and issue/PR references dropped; (item, is_ghsa) pairs."""
    for m in re.finditer(r"^-   (.*(?:\n {4}\S.*)*)", text, re.M):
        item = " ".join(l.strip() for l in m.group(1).split("\n"))
        ghsa = ":ghsa:" in item
        item = re.sub(r"\s*:(issue|pr|ghsa|user|cve):`[^`]*`", "", item)
        item = re.sub(r":[a-z:]+:`~?([^`<]*?)\s*(<[^>]*>)?`", r"\1", item)
        item = re.sub(r"\s*\(\s*\)", "", item.replace("``", "").replace("`", ""))
        yield clean(item), ghsa


def pallets_changelogs(args):
    """CHANGES.rst of Flask, Werkzeug, Jinja and Click. Rule: an item matching CHANGELOG_CYBER, or
    a GHSA-referenced item whose text carries security_cue, is 1 cyber_changelog; an item with no
    security word (SECURITY_WORDS) is 0 neg_release_notes; the rest is dropped (a security word
    in a plain change, or a GHSA fix whose text alone does not say security)."""
    for name in ("flask-3.1.2.tar.gz", "werkzeug-3.1.3.tar.gz", "jinja2-3.1.6.tar.gz",
                 "click-8.2.1.tar.gz"):
        for src, rel, text in sdist_files(args, name, r"CHANGES\.rst"):
            for item, ghsa in changes_items(text):
                if not (fits(item) and prose(item)):
                    continue
                if CHANGELOG_CYBER.search(item) or (ghsa and security_cue(item)):
                    yield rec("pallets_changelog_security", "cyber_changelog", 1, item, src, rel)
                elif not SECURITY_WORDS.search(item):
                    yield rec("pallets_changelog_plain", "neg_release_notes", 0, item, src, rel)


def bandit_doc(args):
    """bandit's plugin and blacklist docstrings (bandit/plugins/*.py, bandit/blacklists/*.py):
    the reST prose explaining why a pattern is insecure. Rule: 1 cyber_advice if the paragraph
    passes advice(), else dropped (option tables,
    examples, "Added in", configuration notes that name a plugin but say nothing of security)."""
    for src, rel, text in sdist_files(args, "bandit-1.8.6.tar.gz",
                                      r"bandit/(plugins|blacklists)/\w+\.py"):
        tree = ast.parse(text)
        docs = [ast.get_docstring(n, clean=True) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))]
        for doc in filter(None, docs):
            for para in rst_text_paragraphs(doc):
                para = cut(para)
                if para and advice(para):
                    yield rec("bandit_doc", "cyber_advice", 1, para, src, rel)


# ---- Python 3.11 library documentation ------------------------------------------------------

def html_sections(text, pattern):
    """The HTML of each <section id=...> whose id matches pattern, nested sections included."""
    for m in re.finditer(r'<section id="([^"]+)"', text):
        if not re.search(pattern, m.group(1)):
            continue
        depth = 0
        for t in re.finditer(r"<(/?)section\b", text[m.start():]):
            depth += -1 if t.group(1) else 1
            if depth == 0:
                yield text[m.start():m.start() + t.end()]
                break


def python_doc_security(args, debs):
    """python3.11-doc, library/*.html: paragraphs of sections whose id names security ("Security
    Considerations", "Caring about security", "URL parsing security", ...) and of warning boxes
    anywhere. Rule: 1 cyber_advice if the paragraph passes advice(), else dropped (a
    handle leak or API detail)."""
    deb = debs["python3.11-doc"]
    folder = deb.path("usr/share/doc/python3.11/html/library")
    src = Src("python3.11-doc", deb.version, PYDOC_LICENSE)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".html") or name == "security_warnings.html":
            continue
        page = read_gz(os.path.join(folder, name))
        parts = list(html_sections(page, r"secur"))
        parts += re.findall(r'<div class="admonition warning">.*?</div>', page, re.S)
        for part in parts:
            for para in html_text_paragraphs_keep_code(part):
                para = cut(para)
                if para and advice(para):
                    yield rec("python_doc_security", "cyber_advice", 1, para, src,
                              "usr/share/doc/python3.11/html/library/" + name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", required=True,
                        help="folder with the sdists and deb/python3.11-doc_*.deb")
    parser.add_argument("--rustsec", required=True, help="git dir of rustsec/advisory-db")
    parser.add_argument("--pypa", required=True, help="git dir of pypa/advisory-database")
    parser.add_argument("--out", required=True, help="JSON lines to write")
    parser.add_argument("--sample", type=int,
                        help="instead of the corpus, write N random texts per source (for reading)")
    args = parser.parse_args()

    debs = unpack(args.sources)
    in_eval = ood_guard()
    readers = [rustsec(args), pypa(args), flask_web_security(args), bandit_doc(args),
               python_doc_security(args, debs), pallets_changelogs(args)]
    by_source = unseen_by_source((r for reader in readers for r in reader), set(), in_eval)

    records = draw_by_quota(by_source, QUOTA, args.sample, SEED)

    write(args.out, records)
    report(records)


if __name__ == "__main__":
    main()
