"""How separable is models/ood/ at all with all-mpnet-base-v2 embeddings? A ceiling for issue #18.

    python tools/train/ood_ceiling.py [--dir models/ood] [--seeds 3] [--curve] [--sweep]

Trains classifiers on the evaluation set itself, ten-fold cross-validated (each text scored by a
classifier that saw the other nine tenths of the set, so its own sources and labelling), and
reports AUC and the false-positive rate on the adjacent negatives at the threshold that keeps
recall at 0.90. A head trained only on other sources cannot be expected to do better than
classifiers fitted to this very distribution: where these stay below a goal, the embedding (not
the head or its training data) is what limits it. Needs scikit-learn (requirements.txt).

Ten folds train on 90 % of a small set, so the table alone could understate what more text of
the same kind would reach. `--curve` repeats it from half the set up to all texts but one
(leave-one-out): where AUC stops rising, more of this data would not lift it. `--sweep` tries
the SVM's regularisation and kernel width around the defaults; the best of those, picked on the
same folds it is scored on, is an optimistic bound.
"""
import argparse
import json

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import LeaveOneOut, StratifiedKFold, cross_val_predict
from sklearn.svm import SVC

RECALL = 0.90
CLASSIFIERS = {
    "SVM, RBF kernel (C=10)": lambda: SVC(C=10),
    "logistic regression (C=10)": lambda: LogisticRegression(C=10, max_iter=5000),
}


def scores(make, x, y, folds, seed):
    """Each text's score from a classifier fitted without it: `folds` stratified folds, or
    leave-one-out where `folds` is the number of texts."""
    cv = LeaveOneOut() if folds == len(y) else StratifiedKFold(folds, shuffle=True,
                                                               random_state=seed)
    return cross_val_predict(make(), x, y, cv=cv, method="decision_function")


def adjacent_fpr(score, y, adjacent):
    """False-positive rate on the adjacent negatives at the highest threshold that still finds
    RECALL of the cyber texts."""
    threshold = np.sort(score[y == 1])[int((1 - RECALL) * (y == 1).sum())]
    return float((score[(y == 0) & adjacent] >= threshold).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="models/ood")
    parser.add_argument("--seeds", type=int, default=3, help="fold shuffles to repeat")
    parser.add_argument("--curve", action="store_true",
                        help="also by share of the set trained on, up to leave-one-out")
    parser.add_argument("--sweep", action="store_true",
                        help="also the SVM over C and kernel width (an optimistic bound)")
    args = parser.parse_args()

    x = np.load(f"{args.dir}/embeddings.npy").astype(np.float32)
    y = np.load(f"{args.dir}/labels.npy").astype(np.int64)
    with open(f"{args.dir}/texts.jsonl", encoding="utf-8") as f:
        adjacent = np.array([json.loads(line)["adjacent"] for line in f])
    print(f"{len(y)} texts, {int(y.sum())} cyber, {int(((y == 0) & adjacent).sum())} adjacent "
          f"negatives; 10-fold cross-validation on the set itself")
    print("| Classifier | Fold seed | AUC | Adjacent FPR at recall 0.90 |")
    print("|---|---|---|---|")
    for name, make in CLASSIFIERS.items():
        for seed in range(args.seeds):
            score = scores(make, x, y, 10, seed)
            print(f"| {name} | {seed} | {roc_auc_score(y, score):.4f} | "
                  f"{adjacent_fpr(score, y, adjacent):.3f} |")

    if args.curve:
        print(f"\nBy share of the set trained on ({args.seeds} fold shuffles; leave-one-out has "
              "one); ranges are min-max")
        print("| Classifier | Folds | Trained on | AUC | Adjacent FPR at recall 0.90 |")
        print("|---|---|---|---|---|")
        for name, make in CLASSIFIERS.items():
            for folds in (2, 5, 10, 20, len(y)):
                runs = [scores(make, x, y, folds, seed)
                        for seed in range(1 if folds == len(y) else args.seeds)]
                aucs = [roc_auc_score(y, s) for s in runs]
                fprs = [adjacent_fpr(s, y, adjacent) for s in runs]
                label = "leave-one-out" if folds == len(y) else str(folds)
                print(f"| {name} | {label} | {(folds - 1) / folds:.1%} | "
                      f"{min(aucs):.4f}–{max(aucs):.4f} | {min(fprs):.3f}–{max(fprs):.3f} |")

    if args.sweep:
        # scikit-learn's default kernel width, gamma="scale".
        scale = 1.0 / (x.shape[1] * x.var())
        print(f"\nSVM, RBF kernel, 10 folds, median of {args.seeds} fold shuffles")
        print("| C | gamma / default | AUC |")
        print("|---|---|---|")
        for c in (1, 3, 10, 30):
            for width in (0.5, 1, 2):
                aucs = [roc_auc_score(y, scores(lambda: SVC(C=c, gamma=scale * width), x, y, 10,
                                                seed))
                        for seed in range(args.seeds)]
                print(f"| {c} | {width} | {np.median(aucs):.4f} |")


if __name__ == "__main__":
    main()
