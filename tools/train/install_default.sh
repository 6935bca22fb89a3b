#!/usr/bin/env bash
# Makes a train.py output the built-in model: threshold, held-out files, golden vectors, demo input.
#   tools/train/install_default.sh OUT_DIR
# (train.py's output folder; its inputs.json names the corpora it was trained on)
# Needs cargo and a Python with numpy and safetensors ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1
py=${PYTHON:-python3}
cli=target/release/gemma-cyber

mkdir -p models/heldout
for f in validation_embeddings.npy validation_labels.npy test_embeddings.npy test_labels.npy \
         metrics.json split.json; do
  cp "$out/$f" models/heldout/
done

# The operating point is chosen on validation data only; the test split stays untouched.
cargo build --release --quiet
"$cli" threshold models/heldout/validation_embeddings.npy --labels models/heldout/validation_labels.npy \
  --model "$out/model.safetensors" --max-f1 --write-model models/default.safetensors

"$py" tools/golden.py
"$py" tools/train/make_examples.py --inputs "$out/inputs.json" \
  --split models/heldout/split.json --out-dir examples/data

# Rebuilt so the built-in model is the new one; then the model card's metrics rows.
cargo build --release --quiet
own=$("$cli" info --backend cpu | sed -n 's/^  threshold: //p')

# The previous model's test rows come first in the test files (train.py --keep-split).
prev=$(mktemp -d)
trap 'rm -rf "$prev"' EXIT
"$py" - "$prev" <<'PY'
import json, sys
import numpy as np
split = json.load(open("models/heldout/split.json"))
n = sum(1 for row in split["test"] if row < split.get("kept_rows", 0))
for name in ("embeddings", "labels"):
    np.save(f"{sys.argv[1]}/{name}.npy", np.load(f"models/heldout/test_{name}.npy")[:n])
PY
rows() {  # split-name embeddings labels: one card row per threshold
  for t in 0.5 "$own"; do
    "$cli" evaluate --backend cpu --threshold "$t" --format json "$2" --labels "$3" |
      "$py" -c '
import json, sys
m = json.load(sys.stdin); c = m["confusion_matrix"]
print("| %s | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %d | %d | %d | %d |" % (
    sys.argv[1], m["threshold"], m["accuracy"], m["precision"], m["recall"], m["f1"], m["auc"],
    c["true_negatives"], c["false_positives"], c["false_negatives"], c["true_positives"]))' "$1"
  done
}
rows test models/heldout/test_embeddings.npy models/heldout/test_labels.npy
if [ -s "$prev/labels.npy" ]; then
  rows test-previous "$prev/embeddings.npy" "$prev/labels.npy"
fi
rows ood models/ood/embeddings.npy models/ood/labels.npy
"$py" tools/train/eval_ood.py --cli "$cli" --out models/ood/baseline.json > /dev/null
"$py" -c '
import json
r = json.load(open("models/ood/baseline.json"))
for key in ("at_0.5", "at_default_threshold"):
    m = r[key]; c = m["adjacent_confusion"]
    print("| ood-adjacent | %s | %d | %d | %.4f |" % (m["threshold"], m["adjacent_negatives"],
          c["fp"], m["fpr_adjacent_negatives"]))'
