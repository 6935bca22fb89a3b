"""Fixed-seed fixture models for the format and math tests.

Run from anywhere:  python3 tools/make_fixture_model.py
The weights are random, not trained: these files exercise the format and the math, not the task.
The built-in model, models/default.safetensors, is the trained one from tools/train/ and is not
written here; fixture_default.safetensors keeps a random model of the same shape under test.
"""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent.parent


def provenance(seed):
    return {
        "embedding_model": "none (untrained fixture)",
        "source": f"fixture: tools/make_fixture_model.py, seed {seed}, random weights, not trained",
    }


def metadata(seed, norm_order, layer_norm_eps="1e-05", batch_norm_eps="1e-05", threshold="0.5"):
    return {
        "format": "gemma-cyber",
        "format_version": "1",
        "norm_order": norm_order,
        "layer_norm_eps": layer_norm_eps,
        "batch_norm_eps": batch_norm_eps,
        "threshold": threshold,
    } | provenance(seed)


def random_model(seed, dims, dtype):
    """dims = [input, hidden..., 1]. Drawn in float64, then stored as dtype."""
    rng = np.random.default_rng(seed)
    t = {
        "input_norm.weight": 1.0 + 0.1 * rng.standard_normal(dims[0]),
        "input_norm.bias": 0.05 * rng.standard_normal(dims[0]),
    }
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-2], dims[1:-1])):
        p = f"hidden.{i}."
        # He-uniform keeps the activation scale steady through the ReLUs, so the logit
        # neither vanishes nor explodes however many layers there are.
        bound = np.sqrt(6.0 / fan_in)
        t[p + "linear.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in))
        t[p + "linear.bias"] = rng.uniform(-1.0, 1.0, fan_out) / np.sqrt(fan_in)
        t[p + "norm.weight"] = rng.uniform(0.5, 1.5, fan_out)
        t[p + "norm.bias"] = 0.1 * rng.standard_normal(fan_out)
        t[p + "norm.running_mean"] = 0.1 * rng.standard_normal(fan_out)
        t[p + "norm.running_var"] = rng.uniform(0.5, 2.0, fan_out)
    # Twice the LeCun-uniform bound: found by trying, it puts the logit's spread on unit-norm
    # inputs at about 1.3, so probabilities cover (0, 1) without piling up at 0 or 1.
    bound = 2.0 * np.sqrt(3.0 / dims[-2])
    t["output.weight"] = rng.uniform(-bound, bound, (1, dims[-2]))
    t["output.bias"] = rng.uniform(-1.0, 1.0, 1) / np.sqrt(dims[-2])
    return {k: v.astype(dtype) for k, v in t.items()}


def write_safetensors(tensors, path, metadata=None):
    # safetensors stores __metadata__ from a Rust HashMap, so its key order changes from run to
    # run; sorting the keys (same header length, same offsets) makes the file reproducible.
    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    canonical = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(canonical) <= n
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:8] + canonical.ljust(n) + data[8 + n:])


def main():
    full = [768, 512, 256, 128, 1]
    write_safetensors(random_model(20261125, full, np.float32),
                      ROOT / "tests/fixtures/fixture_default.safetensors",
                      metadata(20261125, "linear_bn_relu"))
    write_safetensors(random_model(20261126, full, np.float32),
                      ROOT / "tests/fixtures/relu_bn.safetensors",
                      metadata(20261126, "linear_relu_bn"))
    write_safetensors(random_model(20261127, [16, 8, 4, 1], np.float16),
                      ROOT / "tests/fixtures/small_f16.safetensors",
                      metadata(20261127, "linear_bn_relu", layer_norm_eps="0.001",
                               batch_norm_eps="0.0001", threshold="0.3"))
    # No metadata at all: loaders must fall back to the format's defaults.
    write_safetensors(random_model(20261128, [12, 6, 1], np.float32),
                      ROOT / "tests/fixtures/no_metadata.safetensors")


if __name__ == "__main__":
    main()
