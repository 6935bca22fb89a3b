"""Trains the gemma_cyber head on embeddings and exports it in gemma-cyber's safetensors format.

    python tools/train/train.py --embeddings embeddings.npy --labels labels.npy --out-dir out/
    python tools/train/train.py --npz data.npz --out-dir out/      # arrays "embeddings", "labels"
    python tools/train/train.py --embeddings a.npy b.npy --texts a.jsonl b.jsonl --out-dir out/

The recipe is the original model card's: LayerNorm(dim) → [Linear + BatchNorm1d + ReLU] × 3
(512, 256, 128) → Linear → sigmoid; Adam (lr 1e-3, betas 0.9/0.999); binary cross-entropy; batch
512; class-balanced sampling; ReduceLROnPlateau on validation AUC (factor 0.5, patience 5); early
stopping on validation AUC (patience 15), keeping the best epoch. The data are split train /
validation / test, stratified by label, with a fixed seed; `--keep-split` keeps the rows an
earlier split.json placed where they were (so a retrained model is tested on the same held-out
rows) and splits only the rows after them. Several corpora (`--embeddings` and `--texts` in
pairs) are joined in the order given. Runs on CPU, deterministically.

Writes to --out-dir: model.safetensors (tensors and provenance metadata), metrics.json (held-out
test metrics at threshold 0.5, computed like the Rust library does: float16-rounded inputs, the
float64 reference of tools/golden.py), {validation,test}_embeddings.npy (float16) and
{validation,test}_labels.npy (uint8), and split.json (which input rows went where).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from golden import reference  # noqa: E402  the same float64 forward pass the golden tests use
from make_fixture_model import write_safetensors  # noqa: E402  reproducible header order
from corpus import read_embeddings, read_records  # noqa: E402  shared with make_examples.py

HIDDEN = (512, 256, 128)
EPS = 1e-5


class GemmaCyber(nn.Module):
    """The gemma_cyber architecture, named so the state dict maps onto the file's tensors."""

    def __init__(self, dim, hidden=HIDDEN, dropout=0.0):
        super().__init__()
        self.input_norm = nn.LayerNorm(dim, eps=EPS)
        blocks = []
        for fan_in, fan_out in zip((dim,) + hidden[:-1], hidden):
            block = nn.Module()
            block.linear = nn.Linear(fan_in, fan_out)
            block.norm = nn.BatchNorm1d(fan_out, eps=EPS)
            blocks.append(block)
        self.hidden = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden[-1], 1)

    def forward(self, x):
        h = self.input_norm(x)
        for block in self.hidden:
            h = self.dropout(torch.relu(block.norm(block.linear(h))))
        return self.output(h).squeeze(1)  # logits; the sigmoid lives in the loss and at export


def roc_auc(scores, labels):
    """AUC by the rank method, ties sharing their average rank (as src/metrics.rs)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    i = 0
    while i < len(scores):
        j = i + 1
        while j < len(scores) and sorted_scores[j] == sorted_scores[i]:
            j += 1
        ranks[order[i:j]] = (i + 1 + j) / 2.0
        i = j
    p = labels.sum()
    n = len(labels) - p
    return float((ranks[labels].sum() - p * (p + 1) / 2.0) / (p * n))


def metrics(probabilities, labels, threshold):
    """The model card's numbers; zero divisions give 0, as in src/metrics.rs."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(probabilities) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    tn = int((~predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())

    def ratio(a, b):
        return a / b if b else 0.0

    return {
        "rows": len(labels), "threshold": threshold,
        "accuracy": ratio(tp + tn, len(labels)), "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(probabilities, labels),
        "confusion_matrix": {"true_negatives": tn, "false_positives": fp,
                             "false_negatives": fn, "true_positives": tp},
    }


def stratified_split(labels, fractions, seed):
    """Row indices for each part, every class split in the same proportions."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(rows)).astype(int)
        for part, chunk in zip(parts, np.split(rows, cuts)):
            part.extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def load_data(args):
    if args.npz:
        data = np.load(args.npz)
        x, y = data["embeddings"], data["labels"]
    else:
        x = read_embeddings(args.embeddings)
        if args.labels:
            y = np.loadtxt(args.labels) if args.labels.endswith(".txt") else np.load(args.labels)
        else:
            y = np.array([r["label"] for r in read_records(args.texts)])
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64).ravel()
    if x.ndim != 2 or len(x) != len(y) or not set(np.unique(y)) <= {0, 1}:
        sys.exit(f"need 2-D embeddings and one 0/1 label per row; got {x.shape} and {y.shape}")
    return x, y


def split_rows(y, fractions, seed, keep=None):
    """Train / validation / test rows; with `keep` (an earlier split.json), its rows stay in
    their parts and only the rows after them are split anew."""
    if keep is None:
        return stratified_split(y, fractions, seed)
    earlier = [np.array(keep[name], dtype=np.int64) for name in ("train", "validation", "test")]
    start = sum(len(rows) for rows in earlier)
    if sorted(np.concatenate(earlier).tolist()) != list(range(start)) or start > len(y):
        sys.exit("--keep-split: its rows must be exactly the first rows of the data")
    new = stratified_split(y[start:], fractions, seed)
    return [np.sort(np.concatenate([old, rows + start])) for old, rows in zip(earlier, new)]


def kept_rows(keep):
    """How many first rows an earlier split placed: the test rows among them (the first ones of
    the test files) are the earlier model's test split. Rerunning with a split.json that itself
    kept rows (to reproduce a model) keeps its count, so the same rows stay "previous"."""
    return keep.get("kept_rows", sum(len(keep[k]) for k in ("train", "validation", "test")))


def source_summary(texts_paths, rows):
    """Per-source counts of the training rows, for the model's metadata."""
    records = read_records(texts_paths)
    counts = {}
    for i in rows:
        counts[records[i]["source"]] = counts.get(records[i]["source"], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def export(model, path, metadata):
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    write_safetensors(state, Path(path), metadata)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", nargs="+",
                        help=".npy [rows, dim] float32 or float16; several are joined in order")
    parser.add_argument("--labels", help=".npy (or .txt, one per line) of 0/1, one per row")
    parser.add_argument("--texts", nargs="+",
                        help="JSON lines with label and source (collect_*.py), one per --embeddings")
    parser.add_argument("--npz", help=".npz with arrays 'embeddings' and 'labels'")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15),
                        metavar=("TRAIN", "VALIDATION", "TEST"))
    parser.add_argument("--keep-split", metavar="SPLIT_JSON",
                        help="keep an earlier split's rows in their parts; split only later rows")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="Adam's L2 penalty; the original card names none")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="after each ReLU while training; the original card names none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedding-model", default="sentence-transformers/all-mpnet-base-v2")
    parser.add_argument("--source", default="tools/train/train.py",
                        help="provenance text for the model's metadata")
    args = parser.parse_args()
    if not (args.npz or args.embeddings) or not (args.npz or args.labels or args.texts):
        parser.error("give --npz, or --embeddings with --labels or --texts")
    if args.texts and args.embeddings and len(args.texts) != len(args.embeddings):
        parser.error("give one --texts file per --embeddings file, in the same order")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    x, y = load_data(args)
    fractions = np.array(args.split) / sum(args.split)
    keep = json.load(open(args.keep_split)) if args.keep_split else None
    train_rows, val_rows, test_rows = split_rows(y, fractions, args.seed, keep)
    print(f"{len(y)} rows ({y.mean():.1%} cyber): train {len(train_rows)}, validation "
          f"{len(val_rows)}, test {len(test_rows)}", file=sys.stderr)

    xt = torch.from_numpy(x[train_rows])
    yt = torch.from_numpy(y[train_rows]).float()
    xv = torch.from_numpy(x[val_rows])
    yv = y[val_rows]

    model = GemmaCyber(x.shape[1], dropout=args.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999),
                                 weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                           patience=5)
    loss_fn = nn.BCEWithLogitsLoss()  # BCE on the sigmoid, computed stably from the logit
    # Class-balanced sampling: each class drawn equally often, an epoch as many draws as rows.
    counts = np.bincount(y[train_rows], minlength=2)
    weights = torch.from_numpy(1.0 / counts[y[train_rows]])
    generator = torch.Generator().manual_seed(args.seed)

    best_auc, best_epoch, best_state, stale = -1.0, 0, None, 0
    t0 = time.time()
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        draws = torch.multinomial(weights, len(train_rows), replacement=True, generator=generator)
        total = 0.0
        for start in range(0, len(draws), args.batch_size):
            batch = draws[start:start + args.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single row
                continue
            optimizer.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_auc = roc_auc(torch.sigmoid(model(xv)).numpy(), yv)
        scheduler.step(val_auc)
        lr = optimizer.param_groups[0]["lr"]
        print(f"epoch {epoch:3d}  loss {total / len(draws):.4f}  val AUC {val_auc:.5f}  lr {lr:g}"
              f"  {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if val_auc > best_auc:
            best_auc, best_epoch, stale = val_auc, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= args.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    print(f"best epoch {best_epoch}, validation AUC {best_auc:.5f}", file=sys.stderr)

    summary = (f"{len(y)} labelled embeddings ({int(y.sum())} cyber, {y.mean():.1%}); stratified "
               f"split seed {args.seed}: train {len(train_rows)}, validation {len(val_rows)}, "
               f"test {len(test_rows)}")
    if keep is not None:
        summary += f" (the first {kept_rows(keep)} rows where an earlier split placed them)"
    if args.texts:
        summary += "; training rows by source: " + source_summary(args.texts, train_rows)
    metadata = {
        "format": "gemma-cyber", "format_version": "1", "norm_order": "linear_bn_relu",
        "layer_norm_eps": "1e-05", "batch_norm_eps": "1e-05", "threshold": "0.5",
        "embedding_model": args.embedding_model,
        "source": args.source,
        "training_data": summary,
        "training_recipe": (f"Adam lr {args.lr} betas 0.9/0.999, BCE, batch {args.batch_size}, "
                            f"class-balanced sampling, dropout {args.dropout}, weight decay "
                            f"{args.weight_decay}, ReduceLROnPlateau "
                            f"on validation AUC (factor 0.5, patience 5), early stopping patience "
                            f"{args.patience}: best epoch {best_epoch} of {epoch}, validation AUC "
                            f"{best_auc:.4f}; torch {torch.__version__}, seed {args.seed}"),
    }
    export(model, out / "model.safetensors", metadata)

    # Held-out splits as they will be committed (float16), scored like the Rust library scores
    # them: the float16 values widened to float32, through the float64 reference forward pass.
    from golden import load_model
    exported = load_model(out / "model.safetensors")
    result = {"best_epoch": best_epoch, "epochs": epoch, "validation_auc": best_auc}
    for name, rows in (("validation", val_rows), ("test", test_rows)):
        x16 = x[rows].astype(np.float16)
        np.save(out / f"{name}_embeddings.npy", x16)
        np.save(out / f"{name}_labels.npy", y[rows].astype(np.uint8))
        p = reference(exported, x16.astype(np.float32))
        result[name] = metrics(p, y[rows], 0.5)
    with open(out / "split.json", "w") as f:
        split = {"seed": args.seed, "fractions": fractions.tolist(),
                 "train": train_rows.tolist(), "validation": val_rows.tolist(),
                 "test": test_rows.tolist()}
        if keep is not None:
            split["kept_rows"] = kept_rows(keep)
        json.dump(split, f)
    if args.texts and args.embeddings:
        # What install_default.sh needs to pick the demo rows (make_examples.py --inputs).
        with open(out / "inputs.json", "w") as f:
            json.dump({"texts": [os.path.abspath(p) for p in args.texts],
                       "embeddings": [os.path.abspath(p) for p in args.embeddings]}, f, indent=1)
    with open(out / "metrics.json", "w") as f:
        json.dump(result, f, indent=2)
    t = result["test"]
    print(f"test at 0.5: accuracy {t['accuracy']:.4f} precision {t['precision']:.4f} recall "
          f"{t['recall']:.4f} F1 {t['f1']:.4f} AUC {t['auc']:.4f} {t['confusion_matrix']}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
