"""Prints the model card's data tables: texts per source and split, with package, version, licence.

    python tools/train/corpus_summary.py --texts texts.jsonl --split out/split.json
"""
import argparse
import collections
import json

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
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", required=True)
    parser.add_argument("--split", required=True)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    split = json.load(open(args.split))
    part = {}
    for name in ("train", "validation", "test"):
        for i in split[name]:
            part[i] = name

    rows = collections.OrderedDict()
    for i, r in enumerate(records):
        key = r["source"]
        if key not in rows:
            package = r["package"].split(" (")[0]
            rows[key] = {"label": r["label"], "package": f"{package} {r['version']}",
                         "licenses": collections.Counter(), "train": 0, "validation": 0,
                         "test": 0}
        rows[key][part[i]] += 1
        rows[key]["licenses"][r["license"]] += 1
    print("| Label | Source | Package | Licence | Train | Validation | Test |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(rows.items(), key=lambda kv: (-kv[1]["label"], -sum(kv[1][p] for p in
                                                                     ("train", "validation", "test"))))
    for key, r in order:
        print(f"| {'cyber' if r['label'] else 'not cyber'} | {DESCRIPTIONS.get(key, key)} "
              f"(`{key}`) | {r['package']} | {' / '.join(l for l, _ in r['licenses'].most_common())} | {r['train']} | {r['validation']} | "
              f"{r['test']} |")
    for name in ("train", "validation", "test"):
        labels = [records[i]["label"] for i in split[name]]
        print(f"{name}: {len(labels)} texts, {sum(labels)} cyber ({sum(labels) / len(labels):.1%})")


if __name__ == "__main__":
    main()
