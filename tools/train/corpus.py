"""The corpora as train.py takes them: several texts files and embedding files, joined in order
(row i of the embeddings is record i of the texts)."""
import json


def read_records(paths):
    """The JSON lines of every texts file, joined in order."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def read_embeddings(paths):
    """The rows of every .npy file as one float32 array, joined in order."""
    import numpy as np  # here, not at the top: corpus_summary.py needs no numpy

    return np.concatenate([np.load(path).astype(np.float32) for path in paths])
