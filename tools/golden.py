"""Float64 numpy reference for gemma-cyber models, and the golden vectors made with it.

Run from anywhere:  python3 tools/golden.py
Writes tests/golden/<name>.{inputs,expected,labels}.npy for every fixture model.

The forward pass is written out layer by layer, with no BatchNorm folding, so that it checks
the Rust code (which folds) rather than repeating it.
"""
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent

# What the model format (README, "Model file") says an absent metadata key means.
DEFAULT_METADATA = {
    "threshold": "0.5",
    "layer_norm_eps": "1e-05",
    "batch_norm_eps": "1e-05",
    "norm_order": "linear_bn_relu",
}

# name -> (model file, seed of its golden inputs)
GOLDEN = {
    "default": ("models/default.safetensors", 101),
    "relu_bn": ("tests/fixtures/relu_bn.safetensors", 102),
    "small_f16": ("tests/fixtures/small_f16.safetensors", 103),
    "no_metadata": ("tests/fixtures/no_metadata.safetensors", 104),
    # The random 768-d model that was the built-in default before a trained one replaced it.
    "fixture_default": ("tests/fixtures/fixture_default.safetensors", 105),
}
ROWS = 64


def load_model(path):
    tensors = {k: v.astype(np.float64) for k, v in load_file(path).items()}
    with safe_open(path, "np") as f:
        metadata = DEFAULT_METADATA | (f.metadata() or {})
    return tensors, metadata


def sigmoid(z):
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def reference(model, x):
    """Probabilities for the rows of x, computed in float64."""
    t, md = model
    ln_eps, bn_eps = float(md["layer_norm_eps"]), float(md["batch_norm_eps"])
    order = md["norm_order"]
    if order not in ("linear_bn_relu", "linear_relu_bn"):
        raise ValueError(f"unknown norm_order {order!r}")

    h = x.astype(np.float64)
    mean = h.mean(axis=1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=1, keepdims=True)  # biased, as PyTorch's LayerNorm
    h = (h - mean) / np.sqrt(var + ln_eps) * t["input_norm.weight"] + t["input_norm.bias"]

    i = 0
    while f"hidden.{i}.linear.weight" in t:
        p = f"hidden.{i}."
        h = h @ t[p + "linear.weight"].T + t[p + "linear.bias"]

        def batch_norm(z):
            return ((z - t[p + "norm.running_mean"]) / np.sqrt(t[p + "norm.running_var"] + bn_eps)
                    * t[p + "norm.weight"] + t[p + "norm.bias"])

        if order == "linear_bn_relu":
            h = np.maximum(batch_norm(h), 0.0)
        else:
            h = batch_norm(np.maximum(h, 0.0))
        i += 1

    return sigmoid((h @ t["output.weight"].T + t["output.bias"])[:, 0])


def unit_rows(rng, n, dim):
    # Sentence embeddings are usually L2-normalised, so most test rows look like that.
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def golden_inputs(rng, dim):
    """ROWS float32 rows: the kinds of input a classifier meets, plus edge cases for LayerNorm."""
    constant = np.full((1, dim), 0.25)  # zero variance: LayerNorm output is its bias alone
    spike = np.zeros((1, dim))
    spike[0, dim // 2] = 10.0
    x = np.concatenate([
        unit_rows(rng, 48, dim),
        unit_rows(rng, 4, dim) * 100.0,  # LayerNorm should make scale irrelevant...
        unit_rows(rng, 4, dim) * 1e-3,   # ...until the variance falls below eps
        constant,
        spike,
        rng.standard_normal((ROWS - 58, dim)),
    ])
    return np.ascontiguousarray(x, dtype=np.float32)


def main():
    out = ROOT / "tests/golden"
    out.mkdir(parents=True, exist_ok=True)
    for name, (path, seed) in GOLDEN.items():
        model = load_model(ROOT / path)
        x = golden_inputs(np.random.default_rng(seed), model[0]["input_norm.weight"].shape[0])
        p = reference(model, x)
        np.save(out / f"{name}.inputs.npy", x)
        np.save(out / f"{name}.expected.npy", p)
        np.save(out / f"{name}.labels.npy", (p >= float(model[1]["threshold"])).astype(np.uint8))


if __name__ == "__main__":
    main()
