"""Prints the model card's data tables: texts per source and split, with package, version, licence.

    python tools/train/corpus_summary.py --texts a.jsonl b.jsonl --split out/split.json

One row per source and label (the sources read by hand have both), in the order train.py was given
the texts files.
"""
import argparse
import collections
import json

from corpus import read_records

DESCRIPTIONS = {
    "attack_procedure": "ATT&CK procedure examples (how a group or tool used a technique)",
    "attack_technique": "ATT&CK technique and sub-technique descriptions",
    "attack_software": "ATT&CK malware and tool descriptions",
    "attack_group": "ATT&CK group and campaign descriptions",
    "attack_mitigation": "ATT&CK mitigation descriptions",
    "cwe_description": "CWE weakness descriptions",
    "cwe_observed_example": "CVE examples observed for CWE weaknesses",
    "genai_incident": "AI-system security incidents and CVEs (non-templated)",
    "wikipedia_security": "Wikipedia vital-article summaries: Computer security, Malware",
    "wikipedia": "Wikipedia level-4 vital-article summaries",
    "wikibooks_recipe": "Wikibooks Cookbook recipes",
    "news_lee": "Lee et al. (2005) news corpus, gensim's test data",
    "python_stdlib_doc": "CPython 3.11 standard-library docstrings (networking, OS, data): hard negatives",
    # collect_broad.py (tools/train/SOURCES.md)
    "ssg_rule": "SCAP Security Guide rule rationales and descriptions",
    "tiger_explanation": "Tiger security-audit finding explanations",
    "kernel_security_doc": "Linux kernel security and hardware-vulnerability docs",
    "gnome_help_security": "GNOME Help security pages",
    "security_manpage": "security tools' man pages",
    "debian_changelog_security": "Debian changelog entries citing a CVE or security fix",
    "debian_changelog_plain": "Debian changelog entries",
    "upstream_news": "upstream NEWS/CHANGES entries",
    "kernel_admin_doc": "Linux kernel admin, networking and filesystem docs",
    "admin_manpage": "administration and networking man pages",
    "gnome_help": "GNOME Help",
    "debian_admin_docs": "Debian FAQ and installation guide",
    "hledger_manual": "hledger accounting manual",
    "cctv_docs": "ZoneMinder and Motion (CCTV) guides",
    "debian_governance": "Debian Constitution, Social Contract, Manifesto",
    # collect_advisories.py
    "rustsec_advisory": "RustSec vulnerability advisories",
    "pypa_advisory": "PyPA (Python) vulnerability advisories",
    "flask_web_security": "Flask's web-security page",
    "bandit_doc": "bandit's explanations of insecure patterns",
    "python_doc_security": "Python 3.11 docs' security sections",
    "pallets_changelog_security": "Flask/Werkzeug/Jinja/Click changelog security fixes",
    "pallets_changelog_plain": "Flask/Werkzeug/Jinja/Click changelog items",
    "rustsec_notice": "RustSec unmaintained-crate notices",
}
READ_SUFFIX = "_read"  # collect_broad.py --read-labels: paragraphs labelled by reading


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", required=True, nargs="+", help="as given to train.py")
    parser.add_argument("--split", required=True)
    args = parser.parse_args()
    records = read_records(args.texts)
    split = json.load(open(args.split))
    part = {}
    for name in ("train", "validation", "test"):
        for i in split[name]:
            part[i] = name

    rows = collections.OrderedDict()
    for i, r in enumerate(records):
        key = (r["source"], r["label"])
        if key not in rows:
            rows[key] = {"packages": collections.Counter(), "licenses": collections.Counter(),
                         "train": 0, "validation": 0, "test": 0}
        rows[key][part[i]] += 1
        rows[key]["packages"][f"{r['package'].split(' (')[0]} {r['version']}"] += 1
        rows[key]["licenses"][r["license"]] += 1
    print("| Label | Source | Package | Licence | Train | Validation | Test |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(rows.items(), key=lambda kv: (-kv[0][1], -sum(kv[1][p] for p in
                                                                 ("train", "validation", "test"))))
    for (source, label), r in order:
        base = source.removesuffix(READ_SUFFIX)
        what = DESCRIPTIONS.get(base, base)
        if source != base:
            what += " with a security word, read by hand"
        elif source + READ_SUFFIX in {s for s, _ in rows}:
            what += " with no security word"
        packages = r["packages"]
        package = (next(iter(packages)) if len(packages) == 1
                   else f"{len(packages)} packages (tools/train/SOURCES.md)")
        licenses = r["licenses"]
        licence = (" / ".join(l for l, _ in licenses.most_common()) if len(licenses) <= 3
                   else f"{len(licenses)} licences (SOURCES.md)")
        print(f"| {'cyber' if label else 'not cyber'} | {what} (`{source}`) | {package} | "
              f"{licence} | {r['train']} | {r['validation']} | {r['test']} |")
    for name in ("train", "validation", "test"):
        labels = [records[i]["label"] for i in split[name]]
        print(f"{name}: {len(labels)} texts, {sum(labels)} cyber ({sum(labels) / len(labels):.1%})")


if __name__ == "__main__":
    main()
