"""Writes the README's demo input: real held-out texts with their all-mpnet-base-v2 embeddings.

    python tools/train/make_examples.py --texts texts.jsonl --embeddings embeddings.npy \
        --split out/split.json --out-dir examples/data
    python tools/train/make_examples.py --inputs out/inputs.json --split out/split.json ...

Picks, from the test split (texts the model never trained on), the first row of each source in
EXAMPLE_SOURCES (the next one for a repeated source), and writes sample.npy (float32 [8, 768]),
sample.jsonl (the same rows as JSON arrays) and sample_texts.jsonl (row, label, source, package,
version, licence and the text).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from corpus import read_embeddings, read_records

# Four cyber and four non-cyber texts, two of the latter hard negatives (technology text). The
# news corpus is left out: its articles' own licence is unclear, so its text is not redistributed.
EXAMPLE_SOURCES = [
    "attack_procedure", "cwe_description", "genai_incident", "attack_technique",
    "python_stdlib_doc", "wikipedia", "wikibooks_recipe", "python_stdlib_doc",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", nargs="+", help="as given to train.py")
    parser.add_argument("--embeddings", nargs="+",
                        help="float32 .npy, row i = text i; as given to train.py")
    parser.add_argument("--inputs", help="train.py's inputs.json instead of --texts/--embeddings")
    parser.add_argument("--split", required=True, help="split.json written by train.py")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    if args.inputs:
        inputs = json.load(open(args.inputs))
        args.texts, args.embeddings = inputs["texts"], inputs["embeddings"]
    if not args.texts or not args.embeddings:
        parser.error("give --inputs, or --texts and --embeddings")

    records = read_records(args.texts)
    x = read_embeddings(args.embeddings)
    test_rows = json.load(open(args.split))["test"]
    picked = []
    for source in EXAMPLE_SOURCES:
        row = next(i for i in test_rows if records[i]["source"] == source and i not in picked)
        picked.append(row)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample = np.ascontiguousarray(x[picked])
    np.save(out / "sample.npy", sample)
    # repr of the float64 widening is exact, so each value parses back to the same float32.
    with open(out / "sample.jsonl", "w") as f:
        for row in sample:
            f.write(json.dumps([float(v) for v in row]) + "\n")
    with open(out / "sample_texts.jsonl", "w", encoding="utf-8") as f:
        for n, i in enumerate(picked):
            r = records[i]
            f.write(json.dumps({"row": n, "label": r["label"], "source": r["source"],
                                "package": r["package"], "version": r["version"],
                                "license": r["license"], "text": r["text"]},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
