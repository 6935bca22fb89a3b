"""Broader training texts (issue #18) from Debian bookworm packages, offline.

Cyber writing as it appears outside ATT&CK/CWE (hardening rules and their rationales, security
advice for users and administrators, hardware-vulnerability and kernel-security documentation,
changelog entries that fix CVEs) and negatives that share its vocabulary (release notes, IT
operations and networking manuals and man pages, consumer-desktop help, CCTV documentation,
personal accounting, a constitution and other governance texts).

None of these packages, nor any package built from the same Debian source, is among the sources
reserved for evaluation in models/ood/README.md (checked: the reserved changelogs are those of the
openssh, openssl, curl, sudo, nginx, apache2, samba, git, postgresql-15, bind9, tar, rsync and
wget sources; the reserved documents are harden-doc, debian-handbook, debian-reference,
gnucash-docs, fortunes, base-files' licences, Django, axios, alarmdecoder, Go vulndb, safety-db).
The script refuses a reserved source package.

Download (exact versions: tools/train/SOURCES.md), then:

    python tools/train/collect_broad.py --sources /tmp/broad-src --out /tmp/broad.jsonl
    python tools/train/collect_broad.py --sources /tmp/broad-src --sample 25 --out /tmp/sample.jsonl
    python tools/train/collect_broad.py --sources /tmp/broad-src --dropped --out /tmp/dropped.jsonl
    python tools/train/collect_broad.py --sources /tmp/broad-src --out /tmp/broad.jsonl \
        --read-labels tools/train/broad_labels_by_reading.tsv --read-out /tmp/read.jsonl

--dropped writes the hard cases for reading: the first READ_SAMPLE texts of each negative source's
fixed reading order (prefix-stable) from the paragraphs SECURITY_WORDS keeps out of the
negatives, as source "<source>_read".
--read-labels appends those kept by reading, with the label and category decided in the TSV,
after the corpus (whose rows stay as they were); it stops if a drawn candidate has no decision or
a decision names no candidate. --read-out writes the read texts alone.

The .deb files in SOURCES/deb are unpacked with dpkg-deb into SOURCES/x (kept as a cache); man
pages are rendered with groff. Each output line: {"id", "text", "label" (1 cyber, 0 not),
"category", "source", "package", "version", "path", "license"}. Labels follow a written rule per
source (RULES below; keyword checks drop texts whose label the rule cannot vouch for), checked by
reading samples (SOURCES.md gives the measured error rates). Deterministic: fixed file order,
per-source quotas drawn with a fixed seed, ids are "<source>-<sha1 of text, 10 hex>".
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
import xml.etree.ElementTree as ET

import debian_changelog

SEED = 20261129
MIN_CHARS = 60
MAX_CHARS = 800

# Texts kept per source (after filtering; fewer when the pool is smaller). Chosen for ~27% cyber
# with the adjacent negatives (release notes, IT ops, networking) well represented.
QUOTA = {
    # cyber
    "ssg_rule": 700,                 # cyber_advice
    "tiger_explanation": 250,        # cyber_advice
    "kernel_security_doc": 350,      # cyber_advice / cyber_advisory
    "gnome_help_security": 120,      # cyber_advice
    "security_manpage": 150,         # cyber_advice
    "debian_changelog_security": 750,  # cyber_changelog
    # not cyber
    "debian_changelog_plain": 1100,  # neg_release_notes
    "upstream_news": 450,            # neg_release_notes
    "kernel_admin_doc": 750,         # neg_networking / neg_it_ops
    "admin_manpage": 700,            # neg_networking / neg_it_ops
    "gnome_help": 500,               # neg_consumer_tech
    "debian_admin_docs": 450,        # neg_it_ops
    "hledger_manual": 325,           # neg_finance
    "cctv_docs": 300,                # neg_physical_security
    "debian_governance": 150,        # neg_politics_law
}

RESERVED_SOURCES = {"openssh", "openssl", "curl", "sudo", "nginx", "apache2", "samba", "git",
                    "postgresql-15", "bind9", "tar", "rsync", "wget", "harden-doc",
                    "debian-handbook", "debian-reference", "gnucash-docs", "fortune-mod",
                    "base-files", "python-django", "alarmdecoder"}

# Any of these in a text makes it unusable as a negative (its label could be wrong).
SECURITY_WORDS = re.compile(
    r"(?i)(secur|vulnerab|attack|exploit|malicious|malware|virus|password|passphrase|credential"
    r"|encrypt|decrypt|cipher|crypt|certificate|authenticat|\bauth\b|\btls\b|\bssl\b|trusted"
    r"|injection|sandbox|privilege|\bhmac|digest|\bhash|secret|\bcve\b|cve-\d|firewall|apparmor"
    r"|selinux|seccomp|\blsm\b|intrus|unauthori|spoof|forg(e|ery|ed)\b|tamper|harden|threat"
    r"|overflow|use-after-free|out-of-bounds|denial of service|\bdos\b|xss|csrf|signature|\bsign(ed|ing)?\b"
    r"|gpg|pgp|keyring|private key|public key|\bsecure boot|integrity|confidential|\bleak|hijack"
    r"|phishing|spam|backdoor|rootkit|trojan|worm|brute|compromis|mitigat|permission|access control"
    r"|\bacl\b|\bsudo\b|setuid|suid|\bdsa\b|\bdla\b|audit|untrust|sanitiz|escap(e|ing) )")

# A text from a cyber section must carry one of these, or the rule drops it (headings, plumbing).
CYBER_CUE = re.compile(
    r"(?i)(secur|vulnerab|attack|exploit|malicious|malware|virus|password|passphrase|credential"
    r"|encrypt|cipher|certificate|authenticat|\btls\b|\bssl\b|untrusted|injection|sandbox"
    r"|privilege|\bcve-\d|firewall|apparmor|selinux|seccomp|\blsm\b|landlock|intrus|unauthori"
    r"|spoof|tamper|harden|threat|overflow|use-after-free|out-of-bounds|denial[- ]of[- ]service"
    r"|\bxss\b|cross-site|csrf|signature|integrity|confidential|\bleak|hijack|backdoor|rootkit"
    r"|trojan|brute|compromis|mitigat|access control|side[- ]channel|speculative|spectre|meltdown"
    r"|adversar|lock(ed|s)? (the )?screen|screen lock|arbitrary code|remote code|phishing|keyring"
    r"|private key|\bgpg\b|malicious activity|unauthorized)")

# Changelog items: a CVE identifier or an unmistakable security fix.
CHANGELOG_CYBER = re.compile(
    r"(?i)(\bcve-\d{4}-\d+|\bsecurity (fix|issue|update|vulnerabilit|problem|flaw|bug|release|advisor)"
    r"|vulnerab|exploit|buffer overflow|heap[- ]overflow|integer overflow"
    r"|use[- ]after[- ]free|out[- ]of[- ]bounds (read|write|access)|double free|denial[- ]of[- ]service"
    r"|cross[- ]site|sql injection|command injection|privilege escalation|arbitrary code"
    r"|remote code execution|\bdsa[- ]\d|\bdla[- ]\d|symlink attack|information (disclosure|leak)"
    r"|bypass)")


def clean(text):
    text = html.unescape(text).replace("\u00a0", " ").replace("\u2010", "-")
    return re.sub(r"\s+", " ", text).strip()


# Licence boilerplate (GPL preambles, "permitted in any medium" notices): the licence texts of
# /usr/share/common-licenses are reserved for evaluation, in every copy, and notices are not prose.
LICENCE_TEXT = re.compile(r"(?i)(general public license|without (any )?warranty|no warranty"
                          r"|permitted in any medium|free software foundation|copyright \(c\)"
                          r"|merchantability|this program is free software)")


def fits(text):
    return MIN_CHARS <= len(text) <= MAX_CHARS and not LICENCE_TEXT.search(text)


def prose(text):
    """Reads as a sentence: mostly letters, ends like a sentence, no code or table residue."""
    letters = sum(c.isalpha() or c == " " for c in text)
    return (letters >= 0.8 * len(text) and text[-1:] in ".!?)\"'" and not text.endswith(":")
            and text[:1].isupper() and "  " not in text and not re.search(r"[{}<>|=$\\]", text)
            and len(text.split()) >= 8)


def cut(text):
    if len(text) <= MAX_CHARS:
        return text
    end = text.rfind(". ", 0, MAX_CHARS)
    return text[: end + 1] if end >= MIN_CHARS else ""


class Deb:
    def __init__(self, package, version, source, folder):
        self.package, self.version, self.source, self.folder = package, version, source, folder
        self.license = debian_license(folder, package)

    def path(self, *parts):
        return os.path.join(self.folder, *parts)


def debian_license(folder, package):
    """Licence of a Debian package from its DEP-5 copyright file: the Files: * stanza's."""
    path = os.path.join(folder, "usr/share/doc", package, "copyright")
    if not os.path.exists(path):
        found = glob.glob(os.path.join(folder, "usr/share/doc/*/copyright"))
        if not found:
            return "see the package's copyright file"
        path = sorted(found)[0]
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    m = re.search(r"^Files: \*[ \t]*\n.*?^License: *([^\n]+)", text, re.M | re.S)
    if m:
        return m.group(1).strip() + " (debian/copyright, Files: *)"
    m = re.search(r"^License: *([^\n]+)", text, re.M)
    return (m.group(1).strip() if m else "see /usr/share/doc/" + package + "/copyright")


def unpack(sources):
    """Unpacks SOURCES/deb/*.deb into SOURCES/x/<package> (once); returns {package: Deb}."""
    debs = {}
    for deb in sorted(glob.glob(os.path.join(sources, "deb", "*.deb"))):
        fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version", "Source"],
                                check=True, capture_output=True, text=True).stdout
        meta = dict(line.split(": ", 1) for line in fields.strip().splitlines())
        source = meta.get("Source", meta["Package"]).split()[0]
        if source in RESERVED_SOURCES:
            sys.exit(f"{deb}: source package {source} is reserved for evaluation")
        folder = os.path.join(sources, "x", meta["Package"])
        if not os.path.isdir(folder):
            os.makedirs(folder)
            subprocess.run(["dpkg-deb", "-x", deb, folder], check=True)
        debs[meta["Package"]] = Deb(meta["Package"], meta["Version"], source, folder)
    return debs


def rec(source, category, label, text, deb, path, license=None):
    return {"source": source, "category": category, "label": label, "text": text,
            "package": deb.package, "version": deb.version,
            "path": os.path.relpath(path, deb.folder) if path.startswith("/") else path,
            "license": license or deb.license}


def dropped_rec(source, category, text, deb, path, license=None):
    """A negative-source text that SECURITY_WORDS keeps out of the corpus: a candidate for reading
    by hand (source "<source>_read", label decided in the --read-labels TSV, 0 until then)."""
    return rec(source + "_read", category, 0, text, deb, path, license) | {"dropped": True}


def neg_rec(source, category, text, deb, path, license=None):
    """A negative source's text: label 0, or a dropped candidate if it has a security word."""
    if SECURITY_WORDS.search(text):
        return dropped_rec(source, category, text, deb, path, license)
    return rec(source, category, 0, text, deb, path, license)


def read_gz(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def blocks(text):
    """Paragraphs split at blank lines, joined into one line each."""
    return [clean(b) for b in re.split(r"\n\s*\n", text) if b.strip()]


# ---- HTML ------------------------------------------------------------------------------------

class Paragraphs(html.parser.HTMLParser):
    """Text of <p> elements (and Mallard <p>), without code, tables or scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.buf, self.skip = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "table", "script", "style", "code", "screen", "tt", "note"):
            self.skip += 1
        if tag == "p" and self.buf is None:
            self.buf = []

    def handle_endtag(self, tag):
        if tag in ("pre", "table", "script", "style", "code", "screen", "tt", "note"):
            self.skip = max(0, self.skip - 1)
        if tag == "p" and self.buf is not None:
            self.out.append(clean("".join(self.buf)))
            self.buf = None

    def handle_data(self, data):
        if self.buf is not None and not self.skip:
            self.buf.append(data)

    def handle_startendtag(self, tag, attrs):
        pass


def html_paragraphs(path):
    parser = Paragraphs()
    parser.feed(read_gz(path))
    # A paragraph that lost inline code (skipped above) reads broken: "run  to"; drop those.
    return [p for p in parser.out if p]


def html_paragraphs_keep_code(path):
    """Like html_paragraphs but keeps inline <code>/<tt> words (for the manuals that use them)."""
    return html_text_paragraphs_keep_code(read_gz(path))


def html_text_paragraphs_keep_code(text):
    """html_paragraphs_keep_code of HTML given as a string (e.g. one section of a page)."""
    text = re.sub(r"</?(code|tt|span|a|em|strong|b|i|literal|filename|command|cmd|gui|guiseq|key"
                  r"|keyseq|link|app|sys|file|input|output|var|replaceable|emphasis)\b[^>]*>", "",
                  text)
    parser = Paragraphs()
    parser.feed(text)
    return [p for p in parser.out if p]


# ---- Sources -----------------------------------------------------------------------------------

def ssg_rules(debs):
    """SCAP Security Guide (Ubuntu 22.04 benchmark): each rule's rationale and prose description,
    each group's description. Rule: cyber (hardening guidance), cue required."""
    deb = debs["ssg-debderived"]
    path = deb.path("usr/share/xml/scap/ssg/content/ssg-ubuntu2204-xccdf.xml")
    root = ET.parse(path).getroot()
    ns = root.tag.split("}")[0] + "}"
    for elem in root.iter():
        if elem.tag not in (ns + "Rule", ns + "Group"):
            continue
        for field in ("rationale", "description"):
            node = elem.find(ns + field)
            if node is None:
                continue
            # Inline markup (<html:code>, <sub>) keeps its words; block code is dropped.
            raw = ET.tostring(node, encoding="unicode")
            raw = re.sub(r"<([a-z0-9_]+:)?pre\b.*?</([a-z0-9_]+:)?pre>", "\n\n", raw, flags=re.S)
            raw = re.sub(r"<([a-z0-9_]+:)?(br|p|li)\b[^>]*/?>", "\n\n", raw)
            raw = re.sub(r"<[^>]+>", "", raw)
            for text in blocks(raw):
                text = cut(text)
                if text and fits(text) and prose(text) and CYBER_CUE.search(text):
                    yield rec("ssg_rule", "cyber_advice", 1, text, deb,
                              f"{os.path.basename(path)}#{elem.get('id')}/{field}",
                              "BSD-3-Clause (ComplianceAsCode scap-security-guide)")


def tiger_explanations(debs):
    """Tiger's explanation of each finding code (usr/lib/tiger/doc/*.txt). Rule: cyber (every
    explanation says why a finding is a security problem); cue required."""
    deb = debs["tiger"]
    for path in sorted(glob.glob(deb.path("usr/lib/tiger/doc/*.txt"))):
        text = read_gz(path)
        # Each explanation follows its finding code on a line of its own: "%acc001w".
        for chunk in re.split(r"^%[a-z]+\d+[a-z]*\s*$", text, flags=re.M)[1:]:
            para = cut(clean(chunk))
            if (para and fits(para) and prose(para) and not para.startswith("See ")
                    and not TIGER_SELF.search(para)
                    and (CYBER_CUE.search(para) or TIGER_CUE.search(para))):
                yield rec("tiger_explanation", "cyber_advice", 1, para, deb, path)


# Explanations of Tiger's own failures (could not compile, not run as root): not about security.
TIGER_SELF = re.compile(r"(?i)(failed for some reason|prevented the system|tiger tool|could not be"
                        r" (run|found|compiled|read)|not running as root|the test|this check)")
TIGER_CUE = re.compile(r"(?i)(world[- ]writ|group[- ]writ|write permission|\.rhosts|setuid|setgid"
                       r"|root access|gain access|disabled login|intruder)")


RST_SKIP = re.compile(r"^\s*(\.\. |:[a-zA-Z ]+:|[=\-~^*#+`'\"]{3,}\s*$|\||\+[-=]|[-*] |\d+\. |#\.)")


def rst_paragraphs(path):
    """Prose paragraphs of a reStructuredText file: no directives, literal blocks, lists, tables."""
    return rst_text_paragraphs(read_gz(path))


def rst_text_paragraphs(text):
    """rst_paragraphs of reStructuredText given as a string (e.g. a docstring)."""
    out = []
    literal = False
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        first = next((l for l in lines if l.strip()), "")
        indent = len(first) - len(first.lstrip())
        if literal and indent > 0:
            continue
        literal = block.rstrip().endswith("::")
        if indent > 0 or any(RST_SKIP.match(l) for l in lines):
            continue
        para = " ".join(l.strip() for l in lines)
        para = re.sub(r":[a-z:]+:`~?([^`<]*?)\s*(<[^>]*>)?`", r"\1", para)
        para = re.sub(r"`([^`<]*?)\s*<[^>]*>`_+", r"\1", para)
        para = para.replace("``", "").replace("**", "").replace("`", "")
        para = re.sub(r"\[\d+\]_|\s+::$", "", para)
        out.append(clean(para))
    return out


KERNEL_CYBER = {"security": "cyber_advice", "admin-guide/LSM": "cyber_advice",
                "admin-guide/hw-vuln": "cyber_advisory", "userspace-api/landlock": "cyber_advice",
                "admin-guide/security-bugs": "cyber_advice", "userspace-api/seccomp_filter": "cyber_advice",
                "admin-guide/module-signing": "cyber_advice", "x86/mds": "cyber_advisory",
                "x86/tsx_async_abort": "cyber_advisory", "x86/pti": "cyber_advisory",
                "x86/intel-iommu": None}
KERNEL_NEG = {"networking": "neg_networking", "admin-guide": "neg_it_ops",
              "filesystems": "neg_it_ops", "block": "neg_it_ops", "power": "neg_it_ops",
              "scheduler": "neg_it_ops", "cpu-freq": "neg_it_ops", "process": "neg_it_ops"}


def kernel_docs(debs):
    """Linux kernel documentation (linux-doc-6.1, Documentation/*.rst). Rule: files under
    security/, admin-guide/LSM, admin-guide/hw-vuln (and a few named security files) → cyber,
    cue required; files under networking/, admin-guide/ (other), filesystems/, block/, power/,
    scheduler/, cpu-freq/, process/ → not cyber, any security word drops the paragraph."""
    deb = debs["linux-doc-6.1"]
    base = deb.path("usr/share/doc/linux-doc-6.1/Documentation")
    for path in sorted(glob.glob(os.path.join(base, "**", "*.rst.gz"), recursive=True)):
        rel = os.path.relpath(path, base)[: -len(".rst.gz")]
        cyber = next((c for k, c in KERNEL_CYBER.items() if rel.startswith(k)), False)
        if cyber is None:
            continue
        neg = next((c for k, c in KERNEL_NEG.items() if rel.startswith(k + "/")), None)
        if rel.startswith("process/") and ("security" in rel or "embargoed" in rel):
            cyber = "cyber_advice"
        for para in rst_paragraphs(path):
            para = cut(para)
            if not (para and fits(para) and prose(para)):
                continue
            if cyber:
                if CYBER_CUE.search(para):
                    yield rec("kernel_security_doc", cyber, 1, para, deb, path, "GPL-2.0-only")
            elif neg:
                yield neg_rec("kernel_admin_doc", neg, para, deb, path, "GPL-2.0-only")


GNOME_SECURITY_PAGES = re.compile(
    r"^(net-firewall|net-security|net-wireless-wepwpa|privacy-screen-lock|session-screenlocks"
    r"|user-goodpassword|user-admin-explain|user-autologin|disk-encrypt)")
# On those pages, a paragraph is cyber only when it says why (risk, attacker, protection), not
# when it is a click-by-click instruction.
GNOME_WHY = re.compile(r"(?i)(secur|attack|malicious|guess|crack|encrypt|firewall|phishing|virus"
                       r"|malware|intrus|protect|risk|safe|gain access|access (to )?your|listen in"
                       r"|sensitive|trusted|someone|other people)")
GNOME_HOWTO = re.compile(r"^(Click|Press|Enter|Select|Open|Make sure|If Automatic|To |Type|Go to"
                         r"|Switch|Use the)|[Rr]evisit")


def gnome_help(debs):
    """GNOME Help (gnome-user-docs 43, C locale Mallard pages): consumer desktop help.
    Rule: pages about firewalls, network security, Wi-Fi encryption, VPN, privacy, screen locks,
    passwords and administrator rights → cyber when the paragraph carries a security cue (else
    dropped); every other page → not cyber, any security word drops the paragraph."""
    deb = debs["gnome-user-docs"]
    for path in sorted(glob.glob(deb.path("usr/share/help/C/gnome-help/*.page"))):
        page = os.path.basename(path)[:-5]
        security_page = GNOME_SECURITY_PAGES.match(page)
        for para in html_paragraphs_keep_code(path):
            para = cut(para)
            if not (para and fits(para) and prose(para)):
                continue
            if security_page:
                if GNOME_WHY.search(para) and not GNOME_HOWTO.search(para):
                    yield rec("gnome_help_security", "cyber_advice", 1, para, deb, path,
                              "CC-BY-SA-3.0")
            else:
                yield neg_rec("gnome_help", "neg_consumer_tech", para, deb, path, "CC-BY-SA-3.0")


def render_man(path):
    out = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", "-rLL=1000n"],
                         input=read_gz(path), capture_output=True, text=True).stdout
    paras = []
    for block in re.split(r"\n\s*\n", out):
        lines = [l for l in block.split("\n") if l.strip()]
        if not lines or any(not l.startswith("       ") or l.startswith("        ") for l in lines):
            continue  # headings, indented option bodies and examples
        paras.append(clean(" ".join(lines)))
    return paras


SECURITY_TOOLS = ["fail2ban", "aide-common", "apparmor-utils", "tiger", "lynis"]
ADMIN_TOOLS = {"iproute2": "neg_networking", "ethtool": "neg_networking",
               "iputils-ping": "neg_networking", "network-manager": "neg_networking",
               "isc-dhcp-client": "neg_networking", "ppp": "neg_networking",
               "avahi-daemon": "neg_networking", "chrony": "neg_networking",
               "ntpsec": "neg_networking", "nfs-common": "neg_networking",
               "tcpdump": "neg_networking", "wireshark-common": "neg_networking",
               "dnsmasq-base": "neg_networking", "unbound": "neg_networking",
               "squid": "neg_networking", "postfix": "neg_it_ops", "exim4-base": "neg_it_ops",
               "dovecot-core": "neg_it_ops", "systemd": "neg_it_ops", "coreutils": "neg_it_ops",
               "util-linux": "neg_it_ops", "lvm2": "neg_it_ops", "e2fsprogs": "neg_it_ops",
               "procps": "neg_it_ops", "grub-common": "neg_it_ops", "apt": "neg_it_ops",
               "dpkg": "neg_it_ops", "mdadm": "neg_it_ops", "parted": "neg_it_ops",
               "logrotate": "neg_it_ops", "cron": "neg_it_ops", "rsyslog": "neg_it_ops",
               "debianutils": "neg_it_ops", "xz-utils": "neg_it_ops", "runc": "neg_it_ops",
               "qemu-utils": "neg_it_ops", "bluez": "neg_consumer_tech"}


def manpages(debs):
    """Man pages (English, sections 1/5/8), rendered by groff, body paragraphs only. Rule: pages of
    security tools (fail2ban, aide, apparmor-utils, tiger, lynis) → cyber when the paragraph carries
    a security cue, else dropped; pages of networking and administration tools → not cyber, any
    security word drops the paragraph."""
    for name in SECURITY_TOOLS + sorted(ADMIN_TOOLS):
        deb = debs[name]
        pages = sorted(p for p in glob.glob(deb.path("usr/share/man/man[158]/*"))
                       if not os.path.islink(p))
        for path in pages:
            for para in render_man(path):
                para = cut(para)
                if not (para and fits(para) and prose(para)):
                    continue
                if name in SECURITY_TOOLS:
                    if CYBER_CUE.search(para):
                        yield rec("security_manpage", "cyber_advice", 1, para, deb, path)
                else:
                    yield neg_rec("admin_manpage", ADMIN_TOOLS[name], para, deb, path)


DOC_PACKAGES = {"debian-faq", "installation-guide-amd64", "doc-debian", "linux-doc-6.1",
                "gnome-user-docs", "ssg-debderived", "ssg-base", "zoneminder-doc", "hledger",
                "kmymoney"}


def changelog_items(text):
    return [clean(item) for item in debian_changelog.changelog_items(text)]


def debian_changelogs(debs):
    """changelog.Debian.gz bullet items of ~100 packages (not the reserved ones). Rule: an item
    citing a CVE or an unmistakable security fix (CHANGELOG_CYBER) → cyber; an item with no
    security word at all → not cyber; the rest dropped. Items that are only a list of patch file
    names, or upload boilerplate, are dropped. At most 40 plain and 60 security items per package,
    so a few long changelogs do not dominate."""
    for name in sorted(debs):
        deb = debs[name]
        path = deb.path("usr/share/doc", name, "changelog.Debian.gz")
        if name in DOC_PACKAGES or not os.path.exists(path):
            continue
        counts = collections.Counter()
        items = changelog_items(read_gz(path))
        # Spread over the whole history: deterministic per-package shuffle, then the cap.
        random.Random(f"{SEED}-{name}").shuffle(items)
        for text in items:
            text = cut(text)
            if not (text and fits(text)) or len(text.split()) < 8:
                continue
            if re.search(r"(?i)^(non-maintainer upload|team upload|new upstream (release|version)"
                         r"\.?$|rebuild|upload to unstable|source-only upload)", text):
                continue
            if sum(c.isalpha() or c == " " for c in text) < 0.75 * len(text):
                continue  # file lists, version strings
            if CHANGELOG_CYBER.search(text):
                if counts[1] < 60:
                    counts[1] += 1
                    yield rec("debian_changelog_security", "cyber_changelog", 1, text, deb, path)
            elif not SECURITY_WORDS.search(text) and not re.search(r"(?i)\bbug\s*#?\d+ is security", text):
                if counts[0] < 40:
                    counts[0] += 1
                    yield rec("debian_changelog_plain", "neg_release_notes", 0, text, deb, path)
            elif counts["read"] < 20:
                counts["read"] += 1
                yield dropped_rec("debian_changelog_plain", "neg_release_notes", text, deb, path)


UPSTREAM_NEWS = ["coreutils/NEWS.gz", "grep/NEWS.gz", "sed/NEWS.gz", "findutils/NEWS.gz",
                 "make/NEWS.gz", "nano/NEWS.gz", "tmux/CHANGES.gz", "bash/CHANGES.gz",
                 "mdadm/changelog.gz", "hledger/changelog.gz", "lynis/changelog.gz",
                 "logrotate/ChangeLog.md.gz", "jq/NEWS.gz", "xz-utils/NEWS.gz", "parted/NEWS.gz",
                 "motion/changelog.gz", "htop/ChangeLog.gz", "less/NEWS.gz", "chrony/NEWS.gz",
                 "e2fsprogs/RELEASE-NOTES.gz", "mpv/changelog.gz", "network-manager/NEWS.gz",
                 "ethtool/NEWS.gz", "avahi-daemon/changelog.gz", "inkscape/NEWS.gz"]


def upstream_news(debs):
    """Upstream NEWS/CHANGES files shipped in the packages. Rule: paragraphs and bullet items
    with no security word → not cyber (release notes); anything with a security word dropped."""
    for rel in UPSTREAM_NEWS:
        name = rel.split("/")[0]
        if name not in debs:
            continue
        deb = debs[name]
        path = deb.path("usr/share/doc", rel)
        if not os.path.exists(path):
            continue
        text = read_gz(path)
        # Bullet items and indented paragraphs both become separate texts.
        text = re.sub(r"\n\s*([*+-]|\d+\.|[a-z]{1,2}\.)\s+", "\n\n", text)
        for para in blocks(text):
            para = re.sub(r"^[*+-] ", "", para)
            para = cut(para)
            if para and fits(para) and prose(para):
                yield neg_rec("upstream_news", "neg_release_notes", para, deb, path)


ADMIN_DOC_LICENSE = {
    "debian-faq": "verbatim and modified copying permitted (Software in the Public Interest; "
                  "debian-faq copyright file)",
    "installation-guide-amd64": "GPL-2.0-only",
}


def debian_admin_docs(debs):
    """The Debian FAQ and the Debian GNU/Linux installation guide (amd64, English). Rule: not
    cyber (IT operations); any security word drops the paragraph."""
    for name, pattern in (("debian-faq", "usr/share/doc/debian/FAQ/*.en.html"),
                          ("installation-guide-amd64",
                           "usr/share/doc/installation-guide-amd64/en/*.html")):
        deb = debs[name]
        for path in sorted(glob.glob(deb.path(pattern))):
            if path.endswith("/apf.html"):
                continue  # the GNU GPL, reserved
            for para in html_paragraphs_keep_code(path):
                para = cut(para)
                if para and fits(para) and prose(para):
                    yield neg_rec("debian_admin_docs", "neg_it_ops", para, deb, path,
                                  ADMIN_DOC_LICENSE[name])


def hledger_manual(debs):
    """The hledger manual (info format): plain-text accounting. Rule: not cyber (finance); any
    security word drops the paragraph."""
    deb = debs["hledger"]
    path = deb.path("usr/share/doc/hledger/hledger.info.gz")
    text = read_gz(path)
    text = re.sub(r"\x1f[^\n]*\n[^\n]*\n", "\n\n", text)  # info node headers
    for para in blocks(text):
        para = cut(para)
        if para and fits(para) and prose(para):
            yield neg_rec("hledger_manual", "neg_finance", para, deb, path)


def cctv_docs(debs):
    """ZoneMinder and Motion documentation: video-surveillance (CCTV) systems. Rule: not cyber
    (physical security); any security word drops the paragraph (their web login/SSL options)."""
    for name, pattern in (("zoneminder-doc", "usr/share/doc/zoneminder-doc/html/**/*.html"),
                          ("motion", "usr/share/doc/motion/motion_*.html")):
        deb = debs[name]
        for path in sorted(glob.glob(deb.path(pattern), recursive=True)):
            if re.search(r"(search|genindex|api)\.html$", path) or "/api/" in path:
                continue
            for para in html_paragraphs_keep_code(path):
                para = cut(para)
                if para and fits(para) and prose(para):
                    yield neg_rec("cctv_docs", "neg_physical_security", para, deb, path)


def debian_governance(debs):
    """The Debian Constitution (current), Social Contract and Manifesto (doc-debian). Rule: not
    cyber (governance, voting, law of an organisation); any security word drops the paragraph."""
    deb = debs["doc-debian"]
    for rel in ("constitution.txt.gz", "social-contract.txt.gz", "debian-manifesto.gz"):
        path = deb.path("usr/share/doc/debian", rel)
        text = read_gz(path)
        text = re.sub(r"\n\s*(\d+(\.\d+)*\.|[A-Z]\.|[*-])\s+", "\n\n", text)
        for para in blocks(text):
            para = cut(para)
            if para and fits(para) and prose(para):
                yield neg_rec("debian_governance", "neg_politics_law", para, deb, path,
                              "GPL / Open Publication License v1.0 (doc-debian copyright file)")


READERS = [ssg_rules, tiger_explanations, kernel_docs, gnome_help, manpages, debian_changelogs,
           upstream_news, debian_admin_docs, hledger_manual, cctv_docs, debian_governance]


# Candidates drawn per negative source from the texts SECURITY_WORDS drops, for reading by hand
# (tools/train/broad_labels_by_reading.tsv decides each one; SOURCES.md, "Hard cases read by hand").
# Each source has one fixed reading order and the first READ_SAMPLE[source] of it are read, so a
# larger number keeps every candidate already decided. The order's first READ_FIRST are the
# original draw (random.sample of 65, read in the first round); the rest of the pool follows in a
# fixed-seed shuffle.
READ_FIRST = 65
READ_SAMPLE = {"debian_changelog_plain": 432, "upstream_news": 257, "kernel_admin_doc": 782,
               "admin_manpage": 456, "gnome_help": 200, "debian_admin_docs": 200,
               "hledger_manual": 65, "cctv_docs": 65, "debian_governance": 65}
READ_SOURCES = list(READ_SAMPLE)
# Reading rounds end at these ranks of each source's order; the output lists round 1 of every
# source, then round 2, then the rest, so a new round never moves an earlier round's rows.
READ_ROUNDS = (READ_FIRST, 200)


def text_key(text):
    return re.sub(r"[^a-z0-9 ]", "", text.lower())


def with_id(r):
    return {"id": f"{r['source']}-{hashlib.sha1(r['text'].encode()).hexdigest()[:10]}"} | r


def read_order(pool, source):
    """The fixed reading order of a source's pool: the original draw first, then a shuffle."""
    first = random.Random(f"{SEED}-read-{source}").sample(pool, min(READ_FIRST, len(pool)))
    taken = {id(r) for r in first}
    rest = [r for r in pool if id(r) not in taken]
    random.Random(f"{SEED}-read-more-{source}").shuffle(rest)
    return first + rest


def draw_dropped(dropped, seen, n=None):
    """The first n (default READ_SAMPLE[source]) of each negative source's reading order, from the
    texts SECURITY_WORDS dropped, de-duplicated among themselves and against the corpus's texts.
    In READ_SOURCES order, the first READ_FIRST of every source before the later ones, so the
    first round's candidates keep their rows."""
    by_source = collections.defaultdict(list)
    for r in dropped:
        key = text_key(r["text"])
        if key not in seen:
            seen.add(key)
            by_source[r["source"]].append(r)
    rounds = [[] for _ in range(len(READ_ROUNDS) + 1)]
    for source in READ_SOURCES:
        pool = by_source[source + "_read"]
        some = read_order(pool, source)[:READ_SAMPLE[source] if n is None else n]
        print(f"{source + '_read':28s} {len(some):6d} of {len(pool):6d} dropped", file=sys.stderr)
        for i, (lo, hi) in enumerate(zip((0,) + READ_ROUNDS, READ_ROUNDS + (None,))):
            rounds[i].extend(some[lo:hi])
    return [r for rnd in rounds for r in rnd]


def read_labels(path):
    """{id: (label or "drop", category, note)} from the TSV of reading decisions."""
    decisions = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            rid, label, category, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            if rid in decisions:
                sys.exit(f"{path}: {rid} decided twice")
            if label not in ("0", "1", "drop"):
                sys.exit(f"{path}: {rid}: label {label!r} is not 0, 1 or drop")
            decisions[rid] = (label, category, note)
    return decisions


def apply_read_labels(candidates, decisions, path):
    """The candidates kept by reading, with their read label and category; stops if a candidate
    has no decision or a decision names no candidate."""
    ids = [with_id(r)["id"] for r in candidates]
    missing = [i for i in ids if i not in decisions]
    extra = sorted(set(decisions) - set(ids))
    if missing or extra:
        sys.exit(f"{path}: {len(missing)} candidates without a decision (e.g. {missing[:3]}), "
                 f"{len(extra)} decisions without a candidate (e.g. {extra[:3]})")
    kept = []
    for r, rid in zip(candidates, ids):
        label, category, _ = decisions[rid]
        if label != "drop":
            kept.append(r | {"label": int(label), "category": category})
    return kept


def write(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(with_id(r), ensure_ascii=False) + "\n")


def report(records):
    """Totals by label and category, on stderr."""
    cyber = sum(r["label"] for r in records)
    print(f"total {len(records)}, cyber {cyber} ({cyber / max(1, len(records)):.1%})",
          file=sys.stderr)
    for cat, n in sorted(collections.Counter((r["label"], r["category"]) for r in records).items()):
        print(f"  {cat[0]} {cat[1]:24s} {n}", file=sys.stderr)


def draw_by_quota(by_source, quota, sample, seed):
    """At most `quota[source]` texts of each source (`sample` each instead, for reading), drawn
    with a fixed seed; the corpus (not a reading sample) is then shuffled with the same draw."""
    rng = random.Random(seed)
    records = []
    for source, most in quota.items():
        pool = by_source[source]
        n = min(most, len(pool)) if sample is None else min(sample, len(pool))
        picked = rng.sample(pool, n) if n < len(pool) else list(pool)
        print(f"{source:28s} {len(picked):6d} of {len(pool):6d}", file=sys.stderr)
        records.extend(picked)
    unknown = set(by_source) - set(quota)
    if unknown:
        sys.exit(f"sources without a quota: {sorted(unknown)}")
    if sample is None:
        rng.shuffle(records)
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", required=True, help="folder with deb/ (the downloads)")
    parser.add_argument("--out", required=True, help="JSON lines to write")
    parser.add_argument("--sample", type=int,
                        help="instead of the corpus, write N random texts per source (for reading)")
    parser.add_argument("--dropped", type=int, nargs="?", const=0,
                        help="instead of the corpus, write the candidates for reading: the first N "
                             "(default READ_SAMPLE per source) of each negative source's reading "
                             "order from the texts SECURITY_WORDS drops")
    parser.add_argument("--read-labels", metavar="TSV",
                        help="append the dropped candidates kept by reading (READ_SAMPLE per "
                             "source), with their read labels, after the corpus")
    parser.add_argument("--read-out", metavar="FILE",
                        help="with --read-labels: also write the read texts alone to FILE")
    args = parser.parse_args()

    debs = unpack(args.sources)
    by_source = collections.defaultdict(list)
    seen = set()
    dropped = []
    for reader in READERS:
        for record in reader(debs):
            if record.pop("dropped", False):
                dropped.append(record)
                continue
            key = text_key(record["text"])
            if key in seen:
                continue
            seen.add(key)
            by_source[record["source"]].append(record)

    if args.dropped is not None:
        candidates = draw_dropped(dropped, set(seen), args.dropped or None)
        write(args.out, candidates)
        print(f"{len(candidates)} candidates for reading", file=sys.stderr)
        return

    records = draw_by_quota(by_source, QUOTA, args.sample, SEED)

    if args.read_labels:
        # Appended in draw order, so the corpus's first rows stay the plain corpus, row for row.
        read = apply_read_labels(draw_dropped(dropped, set(seen)),
                                 read_labels(args.read_labels), args.read_labels)
        records.extend(read)
        if args.read_out:
            write(args.read_out, read)
        print(f"read by hand: {len(read)} kept", file=sys.stderr)

    write(args.out, records)
    report(records)


if __name__ == "__main__":
    main()
