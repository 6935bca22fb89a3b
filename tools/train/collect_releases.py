"""Release notes of networking, web and systems-administration software (issue #18): the
register where the default model flags plain changes as cyber, offline.

The default model's remaining false positives on the evaluation set are mostly release notes and
IT operations that use security's vocabulary without being about an attack or a defence
(models/MODEL_CARD.md, "Out of distribution"). This collector draws changelog items of Python
projects that live in that vocabulary (HTTP clients and servers, TLS, SSH, XML, task queues,
configuration management), none of them reserved for evaluation (models/ood/README.md):

  cyber    items that name a CVE or an unmistakable security fix (CHANGELOG_CYBER)
  not      items with no security word at all (SECURITY_WORDS)
  read     items with a security word but no unmistakable fix: labelled by reading, by the rule
           of models/ood/README.md, in tools/train/releases_labels_by_reading.tsv (these are the
           hard cases: "Drop deprecated support for tuple as auth parameter" is not cyber,
           "Added warnings when using an insecure index" is)

Download the pinned sdists (SDISTS below) from PyPI into SOURCES, then:

    python tools/train/collect_releases.py --sources SOURCES --out /tmp/releases.jsonl \\
        --read-labels tools/train/releases_labels_by_reading.tsv \\
        --exclude /tmp/texts.jsonl /tmp/broad-all.jsonl /tmp/advisories.jsonl
    ... --candidates /tmp/candidates.jsonl     (the read candidates alone, to be read)

Items are de-duplicated among themselves and against the texts of --exclude (the other
corpora), and dropped when they share half their 6-word shingles with an evaluation text.
Conventions are those of collect_broad.py: {"id", "text", "label", "category", "source",
"package", "version", "path", "license"}, 60-800 characters, per-source quotas drawn with a
fixed seed. Python standard library only; deterministic.
"""
import argparse
import collections
import json
import os
import random
import re
import sys
import tarfile

from collect_advisories import ood_guard, unseen_by_source
from collect_broad import (CHANGELOG_CYBER, SECURITY_WORDS, apply_read_labels, clean, cut,
                           draw_by_quota, fits, prose, read_labels, report, text_key, write)

SEED = 20261201
SDISTS = {  # file name -> (package, version, licence, changelog paths inside the sdist)
    "aiohttp-3.14.5.tar.gz": ("aiohttp", "3.14.5", "Apache-2.0", r"CHANGES\.rst"),
    "ansible_core-2.19.14.tar.gz": ("ansible-core", "2.19.14", "GPL-3.0-or-later",
                                    r"changelogs/CHANGELOG-v[\d.]+\.rst"),
    "celery-5.7.0.tar.gz": ("celery", "5.7.0", "BSD-3-Clause",
                            r"Changelog\.rst|docs/history/changelog-[\d.]+\.rst"),
    "cryptography-50.0.2.tar.gz": ("cryptography", "50.0.2", "Apache-2.0 OR BSD-3-Clause",
                                   r"CHANGELOG\.rst"),
    "gunicorn-27.0.1.tar.gz": ("gunicorn", "27.0.1", "MIT", r"docs/content/\d{4}-news\.md"),
    "lxml-6.1.3.tar.gz": ("lxml", "6.1.3", "BSD-3-Clause", r"CHANGES\.txt"),
    "pillow-13.0.0.tar.gz": ("pillow", "13.0.0", "MIT-CMU", r"CHANGES\.rst"),
    "pip-26.3.tar.gz": ("pip", "26.3", "MIT", r"NEWS\.rst"),
    "pyopenssl-26.4.0.tar.gz": ("pyopenssl", "26.4.0", "Apache-2.0",
                                r"CHANGELOG\.rst|doc/ChangeLog_old\.txt"),
    "requests-2.34.2.tar.gz": ("requests", "2.34.2", "Apache-2.0", r"HISTORY\.md"),
    "tornado-6.6.1.tar.gz": ("tornado", "6.6.1", "Apache-2.0", r"docs/releases/v[\d.]+\.rst"),
    "twisted-26.10.0.tar.gz": ("twisted", "26.10.0", "MIT", r"NEWS\.rst"),
    "urllib3-2.8.0.tar.gz": ("urllib3", "2.8.0", "MIT", r"CHANGES\.rst"),
    "waitress-3.0.2.tar.gz": ("waitress", "3.0.2", "ZPL-2.1", r"CHANGES\.txt|HISTORY\.txt"),
}
QUOTA = {
    "release_notes_security": 300,   # cyber_changelog
    "release_notes_plain": 600,      # neg_release_notes
}
# Per package at most this many of each automatic source, so no single changelog dominates.
PER_PACKAGE = {"release_notes_security": 40, "release_notes_plain": 60}
READ_SOURCE = "release_notes_read"
# Read candidates per package: enough of every project's hard cases, few enough to read them all
# (cryptography and pyOpenSSL alone have 470, mostly API changes of a crypto library).
READ_PER_PACKAGE = 45

BULLET = re.compile(r"^(\s*)(?:[-*+]|\d+\.)\s+(\S.*)$")
# Issue and pull-request references, authors, links: not part of what changed.
NOISE = [
    (re.compile(r"\s*--\s*by\s+.*$"), ""),                              # aiohttp's "-- by :user:"
    (re.compile(r":(issue|pr|ghsa|user|cve|bug|commit|gh|mod|class|func|meth|attr|"
                r"data|exc|obj|py:\w+|ref|doc|term|envvar|option|rfc|pep):`~?([^`<]*?)\s*"
                r"(<[^>]*>)?`"), r"\2"),
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`__?"), r"\1"),                       # `text <url>`_
    (re.compile(r"\[([^\]]+)\]\([^)]+\)"), r"\1"),                          # [text](url)
    (re.compile(r"\(?https?://\S+\)?"), ""),
    (re.compile(r"\s*\((?:(?:[Ii]ssue|PR|GH|[Bb]ug|[Ff]ixes|[Ss]ee|[Cc]loses)\s*)?#?\d+"
                r"(?:\s*,\s*#?\d+)*\)"), ""),
    (re.compile(r"\s*\[[\w .,@-]+\]\s*$"), ""),                             # Pillow's [author]
    (re.compile(r"^(?:GH|LP|GHSA|bpo)[#-]?[\w-]*:\s*"), ""),                # lxml's "GH#123:"
    (re.compile(r"``"), ""),
    (re.compile(r"`"), ""),
    (re.compile(r"\*\*?"), ""),
]


def items(text):
    """The first paragraph of each bullet item: continuation lines are those indented past the
    bullet; a blank line, a less indented line or the next bullet ends it."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = BULLET.match(lines[i])
        if not m:
            i += 1
            continue
        indent, parts = len(m.group(1)), [m.group(2)]
        i += 1
        while i < len(lines) and lines[i].strip() and not BULLET.match(lines[i]) \
                and len(lines[i]) - len(lines[i].lstrip()) > indent:
            parts.append(lines[i].strip())
            i += 1
        yield " ".join(parts)


def tidy(item):
    for pattern, replacement in NOISE:
        item = pattern.sub(replacement, item)
    return clean(item).rstrip(" ,;")


def item_prose(text):
    """prose(), except that a changelog item may start with a lower-case name (``apt - fix``,
    ``urllib3.util``): the text itself stays as written."""
    return prose(text[:1].upper() + text[1:])


def changelog_items(args):
    """Every tidy item of every pinned changelog, with its automatic source: security, plain, or
    to be read."""
    for name, (package, version, license, pattern) in SDISTS.items():
        with tarfile.open(os.path.join(args.sources, name)) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
                if not (member.isfile() and re.fullmatch(pattern, rel)):
                    continue
                body = tar.extractfile(member).read().decode("utf-8", "replace")
                for raw in items(body):
                    item = cut(tidy(raw))
                    if not (item and fits(item) and item_prose(item)):
                        continue
                    if CHANGELOG_CYBER.search(item):
                        source, category, label = "release_notes_security", "cyber_changelog", 1
                    elif SECURITY_WORDS.search(item):
                        source, category, label = READ_SOURCE, "neg_release_notes", 0
                    else:
                        source, category, label = "release_notes_plain", "neg_release_notes", 0
                    yield {"source": source, "category": category, "label": label, "text": item,
                           "package": package, "version": version, "path": rel,
                           "license": license}


def per_package(records, most, seed):
    """At most `most` records of each package, drawn with a fixed seed, in a fixed order."""
    by_package = collections.defaultdict(list)
    for r in records:
        by_package[r["package"]].append(r)
    rng = random.Random(seed)
    out = []
    for package in sorted(by_package):
        pool = by_package[package]
        out.extend(rng.sample(pool, most) if len(pool) > most else pool)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", required=True, help="folder with the pinned sdists")
    parser.add_argument("--out", required=True, help="JSON lines to write")
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="JSON lines of other corpora: their texts are not drawn again")
    parser.add_argument("--read-labels", metavar="TSV",
                        help="reading decisions for the read candidates (else they are left out)")
    parser.add_argument("--candidates", metavar="FILE",
                        help="also write the read candidates, in reading order, to FILE")
    args = parser.parse_args()

    missing = [name for name in SDISTS if not os.path.exists(os.path.join(args.sources, name))]
    if missing:
        sys.exit(f"missing from {args.sources}: {', '.join(missing)} (pinned in SDISTS)")
    seen = set()
    for path in args.exclude:
        with open(path, encoding="utf-8") as f:
            seen.update(text_key(json.loads(line)["text"]) for line in f)
    by_source = unseen_by_source(changelog_items(args), seen, ood_guard())

    for source, most in PER_PACKAGE.items():
        by_source[source] = per_package(by_source[source], most, f"{SEED}-{source}")
    candidates = per_package(by_source.pop(READ_SOURCE), READ_PER_PACKAGE, f"{SEED}-read")
    random.Random(f"{SEED}-read").shuffle(candidates)
    print(f"{READ_SOURCE:28s} {len(candidates):6d} candidates to read", file=sys.stderr)
    if args.candidates:
        write(args.candidates, candidates)
    records = draw_by_quota(by_source, QUOTA, None, SEED)
    if args.read_labels:
        decisions = read_labels(args.read_labels)
        records += apply_read_labels(candidates, decisions, args.read_labels)
        random.Random(SEED).shuffle(records)
    write(args.out, records)
    report(records)


if __name__ == "__main__":
    main()
