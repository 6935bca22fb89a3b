"""Real PyTorch checkpoints of the gemma_cyber architecture, for tests/convert.rs.

One-off; CI does not run it (it needs torch, see tools/requirements-torch.txt):
    /work/ml-venv/bin/python tools/make_checkpoint_fixtures.py

Each checkpoint is the exact 768 -> 512 -> 256 -> 128 -> 1 model with random weights and random
BatchNorm running statistics (so folding is really exercised), saved with torch.save in one of
the layouts users have. Beside each: <name>.inputs.npy (float32 rows) and <name>.expected.npy
(the model's own eval-mode sigmoid output, float32 widened to float64).
"""
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "checkpoints"
DIMS = [768, 512, 256, 128]
ROWS = 32


def block(inputs, outputs, relu_first, dropout):
    """One hidden block as nn.Sequential items."""
    layers = [nn.Linear(inputs, outputs)]
    layers += [nn.ReLU(), nn.BatchNorm1d(outputs)] if relu_first else [nn.BatchNorm1d(outputs), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(0.3))
    return layers


def sequential(relu_first, dropout):
    """The whole model as one flat nn.Sequential: keys 0.weight, 1.weight, 2.running_mean, ..."""
    layers = [nn.LayerNorm(DIMS[0])]
    for a, b in zip(DIMS, DIMS[1:]):
        layers += block(a, b, relu_first, dropout)
    layers += [nn.Linear(DIMS[-1], 1), nn.Sigmoid()]
    return nn.Sequential(*layers)


class Named(nn.Module):
    """Named submodules, no nn.Sequential indices: input_norm, fc1, bn1, ..., head."""

    def __init__(self, relu_first):
        super().__init__()
        self.relu_first = relu_first
        self.input_norm = nn.LayerNorm(DIMS[0])
        for i, (a, b) in enumerate(zip(DIMS, DIMS[1:]), start=1):
            setattr(self, f"fc{i}", nn.Linear(a, b))
            setattr(self, f"bn{i}", nn.BatchNorm1d(b))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(DIMS[-1], 1)

    def forward(self, x):
        x = self.input_norm(x)
        for i in range(1, len(DIMS)):
            x = getattr(self, f"fc{i}")(x)
            bn = getattr(self, f"bn{i}")
            x = bn(torch.relu(x)) if self.relu_first else torch.relu(bn(x))
            x = self.dropout(x)
        return torch.sigmoid(self.head(x))


class Nested(nn.Module):
    """A named LayerNorm and head around an nn.Sequential of blocks: input_norm, hidden.0, ..."""

    def __init__(self, relu_first):
        super().__init__()
        self.input_norm = nn.LayerNorm(DIMS[0])
        layers = []
        for a, b in zip(DIMS, DIMS[1:]):
            layers += block(a, b, relu_first, dropout=True)
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(DIMS[-1], 1)

    def forward(self, x):
        return torch.sigmoid(self.output(self.hidden(self.input_norm(x))))


def randomize(model, generator):
    """Random weights everywhere, LayerNorm and BatchNorm affine included, and running stats
    that are far from (0, 1) so a converter that ignores them fails."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.copy_(0.5 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.2 + torch.rand(module.running_var.shape, generator=generator))
                module.num_batches_tracked.fill_(1234)
            if isinstance(module, nn.Linear):
                bound = 1 / module.in_features ** 0.5
                module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * 2 * bound)
                module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)


def save(name, model, payload, seed, subdir=None, config=None, dtype=torch.float32):
    folder = OUT / subdir if subdir else OUT
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    generator = torch.Generator().manual_seed(seed + 1000)
    inputs = torch.randn(ROWS, DIMS[0], generator=generator) * 0.5
    with torch.no_grad():
        out = model(inputs.to(dtype))  # every model here ends in its sigmoid
    expected = out.reshape(-1).to(torch.float64).numpy()
    torch.save(payload, folder / f"{name}.pt")
    np.save(folder / f"{name}.inputs.npy", inputs.numpy().astype(np.float32))
    np.save(folder / f"{name}.expected.npy", expected)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{folder.relative_to(ROOT)}/{name}.pt: {len(expected)} rows, p in [{expected.min():.3f}, {expected.max():.3f}]")


class Pwned:
    """What a malicious checkpoint holds: unpickling it runs a shell command."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/gemma-cyber-pwned",))


class Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/gemma-cyber-pwned')",))


def hostile():
    """Small hostile files, made the way an attacker would: with torch.save and zipfile."""
    folder = OUT / "hostile"
    folder.mkdir(parents=True, exist_ok=True)
    linear = nn.Linear(4, 1)
    # A state dict with one extra entry whose unpickling calls os.system / builtins.eval.
    torch.save({"state_dict": linear.state_dict(), "extra": Pwned()}, folder / "os_system.pt")
    torch.save({"state_dict": linear.state_dict(), "extra": Evil()}, folder / "builtins_eval.pt")
    # A whole pickled module instead of its state_dict: needs torch.nn classes, refused too.
    torch.save(linear, folder / "whole_module.pt")
    # A zip bomb: data.pkl deflated from 256 MiB of zeros to a few hundred KiB.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(256):
                f.write(chunk)
    (folder / "zip_bomb.pt").write_bytes(buffer.getvalue())
    for path in sorted(folder.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


def small_variants():
    """Tiny models (LayerNorm(8) -> Linear(8, 4) + BatchNorm(4) -> Linear(4, 1)) in the encodings
    the big fixtures do not cover: pickle protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME) and float16 /
    bfloat16 weights. Expected outputs are the stored (rounded) weights run in float32."""
    folder = OUT / "small"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, dtype, protocol) in enumerate([
        ("protocol4", torch.float32, 4),
        ("float16", torch.float16, 2),
        ("bfloat16", torch.bfloat16, 2),
    ]):
        model = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid())
        randomize(model, torch.Generator().manual_seed(50 + i))
        model = model.to(dtype).eval()
        torch.save(model.state_dict(), folder / f"{name}.pt", pickle_protocol=protocol)
        inputs = torch.randn(16, 8, generator=torch.Generator().manual_seed(60 + i))
        with torch.no_grad():
            expected = model.float()(inputs).reshape(-1).to(torch.float64).numpy()
        np.save(folder / f"{name}.inputs.npy", inputs.numpy().astype(np.float32))
        np.save(folder / f"{name}.expected.npy", expected)
        print(f"{(folder / name).relative_to(ROOT)}.pt")


def fuzz_seeds():
    """Seeds for the fuzz targets (fuzz/corpus/<target>/): tiny checkpoints of the same shape of
    model (LayerNorm(8) -> Linear(8, 4) + BatchNorm(4) -> Linear(4, 1)) in each layout, and
    their pickles alone, plus the hostile pickles."""
    checkpoint_dir = ROOT / "fuzz" / "corpus" / "checkpoint"
    pickle_dir = ROOT / "fuzz" / "corpus" / "pickle"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    pickle_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(99)
    small = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    randomize(small, generator)
    seeds = {
        "seed_state_dict": small.state_dict(),
        "seed_checkpoint_dict": {"model_state_dict": small.state_dict(), "epoch": 1,
                                 "metrics": {"f1": 0.5}, "tags": ["a", 1, 2.5, None, True]},
        "seed_parameters": dict(small.named_parameters()),
    }
    for name, payload in seeds.items():
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        (checkpoint_dir / name).write_bytes(buffer.getvalue())
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as z:
            pickle_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            (pickle_dir / name).write_bytes(z.read(pickle_name))
    for path in sorted((OUT / "small").glob("*.pt")):
        (checkpoint_dir / f"seed_{path.stem}").write_bytes(path.read_bytes())
        with zipfile.ZipFile(path) as z:
            pickle_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            (pickle_dir / f"seed_{path.stem}").write_bytes(z.read(pickle_name))
    for path in sorted((OUT / "hostile").glob("*.pt")):
        if path.stat().st_size < 16384:
            with zipfile.ZipFile(path) as z:
                pickle_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                (pickle_dir / f"seed_hostile_{path.stem}").write_bytes(z.read(pickle_name))
    print(f"fuzz seeds: {len(list(checkpoint_dir.iterdir()))} checkpoints, {len(list(pickle_dir.iterdir()))} pickles")


def main():
    torch.manual_seed(0)

    # 1. Flat nn.Sequential, Linear -> BatchNorm -> ReLU, saved as a bare state_dict.
    seed = 1
    model = sequential(relu_first=False, dropout=False)
    randomize(model, torch.Generator().manual_seed(seed))
    save("sequential_bn_relu", model, model.state_dict(), seed)

    # 2. Flat nn.Sequential, Linear -> ReLU -> BatchNorm -> Dropout, inside a training
    #    checkpoint dict with plain extras and an optimizer state (not plain: left out).
    seed = 2
    model = sequential(relu_first=True, dropout=True)
    randomize(model, torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    payload = {
        "epoch": 17,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "config": {"hidden_dims": [512, 256, 128], "dropout": 0.3, "lr": 0.01},
        "metrics": {"val_accuracy": 0.9731, "val_f1": 0.9644},
        "best": True,
        "note": "fixture: tools/make_checkpoint_fixtures.py, random weights",
    }
    save("sequential_relu_bn_dropout", model, payload, seed)

    # 3. Named submodules (no indices to infer the order from), BN before ReLU, dropout,
    #    under "state_dict".
    seed = 3
    model = Named(relu_first=False)
    randomize(model, torch.Generator().manual_seed(seed))
    save("named_bn_relu", model, {"state_dict": model.state_dict(), "epoch": 3}, seed)

    # 4. Named submodules, ReLU before BN, bare state_dict: only --norm-order can say so.
    seed = 4
    model = Named(relu_first=True)
    randomize(model, torch.Generator().manual_seed(seed))
    save("named_relu_bn", model, model.state_dict(), seed)

    # 5. LayerNorm and head named around an nn.Sequential of blocks, ReLU before BN, dropout,
    #    non-default eps and threshold given by a config.json beside it, weights in float64.
    seed = 5
    model = Nested(relu_first=True)
    model.input_norm.eps = 1e-6
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eps = 1e-3
    randomize(model, torch.Generator().manual_seed(seed))
    model = model.double()
    config = {
        "layer_norm_eps": 1e-6,
        "batch_norm_eps": 1e-3,
        "threshold": 0.4,
        "embedding_model": "google/embeddinggemma-300m",
        "input_dim": 768,
        "hidden_dims": [512, 256, 128],
    }
    save("nested_relu_bn_f64", model, model.state_dict(), seed, subdir="with_config", config=config, dtype=torch.float64)

    hostile()
    small_variants()
    fuzz_seeds()


if __name__ == "__main__":
    main()
