#!/usr/bin/env bash
# Makes a train.py output the built-in model: threshold, held-out files, golden vectors, demo input.
#   tools/train/install_default.sh OUT_DIR TEXTS.jsonl EMBEDDINGS.npy
# Needs cargo and a Python with numpy and safetensors ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1 texts=$2 embeddings=$3
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
"$py" tools/train/make_examples.py --texts "$texts" --embeddings "$embeddings" \
  --split models/heldout/split.json --out-dir examples/data

# Rebuilt so the built-in model is the new one; then the model card's metrics rows.
cargo build --release --quiet
own=$("$cli" info --backend cpu | sed -n 's/^  threshold: //p')
for t in 0.5 "$own"; do
  "$cli" evaluate --backend cpu --threshold "$t" --format json \
    models/heldout/test_embeddings.npy --labels models/heldout/test_labels.npy
done | "$py" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line); c = m["confusion_matrix"]
    print("| test | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %d | %d | %d | %d |" % (
        m["threshold"], m["accuracy"], m["precision"], m["recall"], m["f1"], m["auc"],
        c["true_negatives"], c["false_positives"], c["false_negatives"], c["true_positives"]))'
