#!/usr/bin/env python3
"""Every gemma-cyber backend next to ONNX Runtime's Python API and PyTorch eager, on the same
weights, in one run: rows/s and per-call latency (min/median/max) by batch size and thread count.

gemma-cyber is measured by its own `gemma-cyber bench` (through Classifier::classify, input checks
included). ONNX Runtime runs the exact graph the onnxruntime backend runs (`gemma-cyber
export-onnx`); PyTorch runs the unfolded model (LayerNorm, Linear, BatchNorm1d, ReLU, Sigmoid) read
from the same safetensors file, in eval mode. Writes results.jsonl and rows_per_second.png to --out.

    python3 tools/bench/compare.py --out docs/bench      # after `cargo build --release`
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model():
    """The CPU's name, family and model, and its widest vector instructions, from /proc/cpuinfo
    (Linux); platform.processor() elsewhere. Results compare only within one host kind."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
    except OSError:
        return platform.processor()
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags", "").split()
    widest = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}, {widest})")


def measure(run, batch, seconds):
    """min/median/max seconds per call of run(), after one untimed warm-up call."""
    run()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    return {"batch": batch, "calls": len(times), "min_s": times[0], "median_s": median,
            "max_s": times[-1], "rows_per_s": batch / median}


def unit_rows(rows, dim, seed=7):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gemma_cyber(binary, backends, batches, seconds, threads, model):
    command = [binary, "bench", "--json", "--backends", ",".join(backends),
               "--batches", ",".join(map(str, batches)), "--seconds", str(seconds),
               "--num-threads", str(threads)]
    if model:
        command += ["--model", model]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        row = json.loads(line)
        row["implementation"] = f"gemma-cyber {row.pop('backend')}"
        yield row


def onnxruntime_python(graph, batches, seconds, threads, dim):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    for batch in batches:
        x = unit_rows(batch, dim)
        row = measure(lambda: session.run(None, {"embeddings": x}), batch, seconds)
        row.update(implementation=f"ONNX Runtime {ort.__version__} Python", device="CPU")
        yield row


def pytorch(model_path, batches, seconds, threads, device):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(model_path)
    with safe_open(model_path, "pt") as f:
        meta = f.metadata() or {}
    bn_first = meta.get("norm_order", "linear_bn_relu") == "linear_bn_relu"
    dim = tensors["input_norm.weight"].shape[0]
    layers = [torch.nn.LayerNorm(dim, eps=float(meta.get("layer_norm_eps", 1e-5)))]
    i = 0
    while f"hidden.{i}.linear.weight" in tensors:
        out, inp = tensors[f"hidden.{i}.linear.weight"].shape
        linear = torch.nn.Linear(inp, out)
        norm = torch.nn.BatchNorm1d(out, eps=float(meta.get("batch_norm_eps", 1e-5)))
        layers += [linear, norm, torch.nn.ReLU()] if bn_first else [linear, torch.nn.ReLU(), norm]
        i += 1
    layers += [torch.nn.Linear(tensors["output.weight"].shape[1], 1), torch.nn.Sigmoid()]
    net = torch.nn.Sequential(*layers)
    # Module parameters in Sequential order, matched to the file's names.
    names = ["input_norm"] + [p for j in range(i) for p in
                              ([f"hidden.{j}.linear", f"hidden.{j}.norm", None] if bn_first
                               else [f"hidden.{j}.linear", None, f"hidden.{j}.norm"])] + ["output", None]
    state = {}
    for index, name in enumerate(names):
        if name is None:
            continue
        for key, value in tensors.items():
            if key.startswith(name + "."):
                state[f"{index}.{key[len(name) + 1:]}"] = value.float()
    missing, unexpected = net.load_state_dict(state, strict=False)
    # Only BatchNorm's step counter is absent from the file; anything else means a wiring mistake.
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    net.eval()
    torch.set_num_threads(threads)
    if device == "cuda":
        net = net.cuda()
        name = torch.cuda.get_device_name()

        # Host rows in, probabilities back on the host: the same work a classify call does.
        def call(x):
            return net(x.cuda()).cpu()
    else:
        name = "CPU"

        def call(x):
            return net(x)
    for batch in batches:
        x = torch.from_numpy(unit_rows(batch, dim))
        with torch.inference_mode():
            row = measure(lambda: call(x), batch, seconds)
        row.update(implementation=f"PyTorch {torch.__version__} eager" + (" CUDA" if device == "cuda" else ""), device=name)
        yield row


def combine_rounds(measured):
    """One row per implementation, thread count and batch: the median of the rounds' medians, the
    least and the most of any call, every round's median kept in `round_medians_s`."""
    cells = {}
    for row in measured:
        cells.setdefault((row["implementation"], row["threads"], row["batch"]), []).append(row)
    rows = []
    for rounds in cells.values():
        row = dict(rounds[0])
        medians = [r["median_s"] for r in rounds]
        row.update(calls=sum(r["calls"] for r in rounds), min_s=min(r["min_s"] for r in rounds),
                   median_s=statistics.median(medians), max_s=max(r["max_s"] for r in rounds),
                   round_medians_s=medians)
        row["rows_per_s"] = row["batch"] / row["median_s"]
        rows.append(row)
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    series = {}
    for r in rows:
        series.setdefault(f"{r['implementation']}, {r['threads']} thr", []).append(r)
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: r["batch"])
        ax.plot([p["batch"] for p in points], [p["rows_per_s"] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows per call)")
    ax.set_ylabel("rows/s (median call)")
    ax.set_title("gemma_cyber MLP: rows/s by batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(REPO, "target", "release", "gemma-cyber"))
    parser.add_argument("--model", default=os.path.join(REPO, "models", "default.safetensors"))
    parser.add_argument("--backends", default="cpu,onnxruntime")
    parser.add_argument("--batches", default="1,16,256,4096,65536")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu",
                        help="where PyTorch runs (cuda: rows copied to the GPU and back in every call)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times to measure every cell, the implementations taking turns: on a shared "
                             "machine a cell's median is the median of its rounds' medians, its min the min")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "bench"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    # The library fetched by tools/fetch_onnxruntime.sh, unless the caller names one.
    fetched = os.path.join(REPO, ".ort", "LIBRARY_PATH")
    if "GEMMA_CYBER_ONNXRUNTIME_LIB" not in os.environ and os.path.exists(fetched):
        with open(fetched) as f:
            os.environ["GEMMA_CYBER_ONNXRUNTIME_LIB"] = os.path.join(REPO, f.read().strip())
    os.makedirs(args.out, exist_ok=True)
    graph = os.path.join(args.out, "gemma_cyber.onnx")
    subprocess.run([args.binary, "export-onnx", "-o", graph, "--model", args.model], check=True)

    measured = []
    for round_ in range(1, args.rounds + 1):
        for threads in [int(t) for t in args.threads.split(",")]:
            sources = [gemma_cyber(args.binary, args.backends.split(","), batches, args.seconds, threads, args.model),
                       onnxruntime_python(graph, batches, args.seconds, threads, 768)]
            try:
                import torch  # noqa: F401  (optional: measured when installed)
                sources.append(pytorch(args.model, batches, args.seconds, threads, args.torch_device))
            except ImportError:
                print("PyTorch not installed: skipped", file=sys.stderr)
            for source in sources:
                for row in source:
                    row["threads"] = threads
                    measured.append(row)
                    print(f"round {round_}  {row['implementation']:<34} {threads} thr  batch {row['batch']:>6}  "
                          f"median {row['median_s'] * 1e6:>12.1f} µs  {row['rows_per_s']:>10.0f} rows/s", flush=True)
    os.remove(graph)
    rows = combine_rounds(measured)

    machine = {"machine": platform.machine(), "processor": cpu_model(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "load_average": os.getloadavg()}
    with open(os.path.join(args.out, "results.jsonl"), "w") as f:
        f.write(json.dumps({"machine": machine}) + "\n")
        for row in rows:
            f.write(json.dumps(row) + "\n")
    plot(rows, os.path.join(args.out, "rows_per_second.png"))

    print("\n| implementation | threads | batch | min | median | max | rows/s (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['implementation']} | {r['threads']} | {r['batch']} | {r['min_s'] * 1e6:.1f} µs | "
              f"{r['median_s'] * 1e6:.1f} µs | {r['max_s'] * 1e6:.1f} µs | {r['rows_per_s']:.0f} |")
    print(f"\nload average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
