"""Scores a model on the out-of-distribution set models/ood/ with the gemma-cyber CLI.

    python tools/train/eval_ood.py --cli target/release/gemma-cyber [--model M.safetensors] \
        [--out models/ood/baseline.json]

Runs `gemma-cyber classify` on models/ood/embeddings.npy (so the probabilities are the library's
own), then reports, at the model's default threshold and at 0.5: AUC, recall, precision, the
false-positive rate on all negatives and on the tech/security-adjacent negatives alone, the
confusion matrices, per-category error rates, and the worst errors (text and probability).
`gemma-cyber evaluate models/ood/embeddings.npy --labels models/ood/labels.npy` gives the
overall figures directly.
"""
import argparse
import collections
import json
import subprocess
import tempfile

import numpy as np


def library_auc(cli, model, embeddings, labels):
    """AUC as the library computes it (`gemma-cyber evaluate`), on the given rows."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", embeddings)
        np.save(f"{tmp}/y.npy", labels)
        cmd = [cli, "evaluate", f"{tmp}/x.npy", "--labels", f"{tmp}/y.npy", "--format", "json"]
        cmd += ["--model", model] if model else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["auc"]


def confusion(y, yhat):
    return {"tp": int(((y == 1) & (yhat == 1)).sum()), "fn": int(((y == 1) & (yhat == 0)).sum()),
            "fp": int(((y == 0) & (yhat == 1)).sum()), "tn": int(((y == 0) & (yhat == 0)).sum())}


def report(y, p, threshold, rows):
    yhat = (p >= threshold).astype(np.uint8)
    cm = confusion(y, yhat)
    adj = np.array([r["adjacent"] for r in rows])
    neg_adj = (y == 0) & adj
    neg_gen = (y == 0) & ~adj
    per_cat = {}
    for cat in sorted({r["category"] for r in rows}):
        m = np.array([r["category"] == cat for r in rows])
        wrong = int((yhat[m] != y[m]).sum())
        per_cat[cat] = {"n": int(m.sum()), "errors": wrong, "error_rate": round(wrong / int(m.sum()), 4)}
    return {
        "threshold": float(threshold),
        "confusion_matrix": cm,
        "recall": round(cm["tp"] / max(1, cm["tp"] + cm["fn"]), 4),
        "precision": round(cm["tp"] / max(1, cm["tp"] + cm["fp"]), 4),
        "fpr_all_negatives": round(cm["fp"] / max(1, cm["fp"] + cm["tn"]), 4),
        "fpr_adjacent_negatives": round(float(yhat[neg_adj].mean()), 4),
        "adjacent_negatives": int(neg_adj.sum()),
        "adjacent_confusion": confusion(y[neg_adj], yhat[neg_adj]),
        "fpr_general_negatives": round(float(yhat[neg_gen].mean()), 4),
        "general_negatives": int(neg_gen.sum()),
        "per_category": per_cat,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", required=True, help="the gemma-cyber binary")
    parser.add_argument("--model", help="model file (default: the built-in model)")
    parser.add_argument("--dir", default="models/ood")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--worst", type=int, default=12)
    args = parser.parse_args()

    rows = [json.loads(line) for line in open(f"{args.dir}/texts.jsonl", encoding="utf-8")]
    y = np.load(f"{args.dir}/labels.npy").astype(np.uint8)
    assert len(rows) == len(y) and all(r["label"] == int(l) for r, l in zip(rows, y))
    cmd = [args.cli, "classify", f"{args.dir}/embeddings.npy", "--format", "jsonl"]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    p = np.array([json.loads(line)["probability"] for line in out], dtype=np.float64)
    labels_default = np.array([json.loads(line)["label"] for line in out])
    # The model's own threshold, checked against the labels classify gave.
    info_cmd = [args.cli, "info", "--format", "json"] + (["--model", args.model] if args.model else [])
    info = subprocess.run(info_cmd, check=True, capture_output=True, text=True).stdout
    threshold = json.loads(info)["threshold"]
    assert np.array_equal(labels_default, (p >= threshold).astype(int)), "threshold mismatch"

    x = np.load(f"{args.dir}/embeddings.npy")
    versus_adjacent = (y == 1) | np.array([r["adjacent"] for r in rows])
    result = {
        "rows": len(y), "cyber": int(y.sum()), "not_cyber": int((y == 0).sum()),
        "auc": round(library_auc(args.cli, args.model, x, y), 4),
        "auc_vs_adjacent_negatives": round(library_auc(args.cli, args.model, x[versus_adjacent],
                                                       y[versus_adjacent]), 4),
        "at_default_threshold": report(y, p, threshold, rows),
        "at_0.5": report(y, p, 0.5, rows),
    }
    fp = sorted((i for i in range(len(y)) if y[i] == 0), key=lambda i: -p[i])[: args.worst]
    fn = sorted((i for i in range(len(y)) if y[i] == 1), key=lambda i: p[i])[: args.worst]
    result["worst_false_positives"] = [
        {"id": rows[i]["id"], "category": rows[i]["category"], "probability": round(float(p[i]), 4),
         "text": rows[i]["text"]} for i in fp]
    result["worst_false_negatives"] = [
        {"id": rows[i]["id"], "category": rows[i]["category"], "probability": round(float(p[i]), 4),
         "text": rows[i]["text"]} for i in fn]
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
