"""How separable is models/ood/ at all with all-mpnet-base-v2 embeddings? A ceiling for issue #18.

    python tools/train/ood_ceiling.py [--dir models/ood] [--seeds 3]

Trains classifiers on the evaluation set itself, ten-fold cross-validated (each text scored by a
classifier that saw the other nine tenths of the set, so its own sources and labelling), and
reports AUC and the false-positive rate on the adjacent negatives at the threshold that keeps
recall at 0.90. A head trained only on other sources cannot be expected to do better than
classifiers fitted to this very distribution: where these stay below a goal, the embedding (not
the head or its training data) is what limits it. Needs scikit-learn (requirements.txt).
"""
import argparse
import json

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC

RECALL = 0.90


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="models/ood")
    parser.add_argument("--seeds", type=int, default=3, help="fold shuffles to repeat")
    args = parser.parse_args()

    x = np.load(f"{args.dir}/embeddings.npy").astype(np.float32)
    y = np.load(f"{args.dir}/labels.npy").astype(np.int64)
    with open(f"{args.dir}/texts.jsonl", encoding="utf-8") as f:
        adjacent = np.array([json.loads(line)["adjacent"] for line in f])
    classifiers = {
        "SVM, RBF kernel (C=10)": lambda: SVC(C=10),
        "logistic regression (C=10)": lambda: LogisticRegression(C=10, max_iter=5000),
    }
    print(f"{len(y)} texts, {int(y.sum())} cyber, {int(((y == 0) & adjacent).sum())} adjacent "
          f"negatives; 10-fold cross-validation on the set itself")
    print("| Classifier | Fold seed | AUC | Adjacent FPR at recall 0.90 |")
    print("|---|---|---|---|")
    for name, make in classifiers.items():
        for seed in range(args.seeds):
            folds = StratifiedKFold(10, shuffle=True, random_state=seed)
            score = cross_val_predict(make(), x, y, cv=folds, method="decision_function")
            # The highest threshold that still finds RECALL of the cyber texts.
            threshold = np.sort(score[y == 1])[int((1 - RECALL) * (y == 1).sum())]
            fpr = float((score[(y == 0) & adjacent] >= threshold).mean())
            print(f"| {name} | {seed} | {roc_auc_score(y, score):.4f} | {fpr:.3f} |")


if __name__ == "__main__":
    main()
