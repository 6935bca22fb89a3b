#!/usr/bin/env python3
"""ONNX Runtime's own Python API on gemma-cyber's ONNX graph: batch-1 latency and rows/s.

The other half of `cargo bench --bench onnxruntime`, which writes the graph, runs this script
between its own rounds and prints both side by side. Session settings match the backend's:
CPU execution provider, all graph optimizations, `--threads` intra-op threads, one inter-op thread.
Inputs are the same fixed-seed rows the Rust side uses (written by it as raw little-endian float32).

Prints one JSON object: version, latency_us (median, p99, cpu_median) and rows_per_s by batch size
(wall-clock as "<rows>", per second of the calling thread's CPU time as "cpu_<rows>").
Needs `pip install -r tools/requirements.txt` (onnxruntime, numpy).
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def latency_us(session, row, iterations):
    wall, cpu = [], []
    for _ in range(iterations):
        start, start_cpu = time.perf_counter(), time.thread_time()
        session.run(None, {"embeddings": row})
        wall.append((time.perf_counter() - start) * 1e6)
        cpu.append((time.thread_time() - start_cpu) * 1e6)
    wall.sort()
    cpu.sort()
    return {
        "median": wall[len(wall) // 2],
        "p99": wall[len(wall) * 99 // 100],
        "cpu_median": cpu[len(cpu) // 2],
    }


def rows_per_s(session, batch, seconds):
    """Rows per wall-clock second and per second of this thread's CPU time."""
    runs, start, start_cpu = 0, time.perf_counter(), time.thread_time()
    while True:
        session.run(None, {"embeddings": batch})
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            cpu = time.thread_time() - start_cpu
            return runs * len(batch) / elapsed, runs * len(batch) / cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the .onnx graph")
    parser.add_argument("--inputs", required=True, help="raw little-endian float32, rows x dim")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2000, help="batch-1 runs")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--batches", default="1024,5000")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    inputs = np.fromfile(args.inputs, dtype="<f4").reshape(-1, args.dim)
    row = np.ascontiguousarray(inputs[:1])
    for _ in range(200):  # warm-up
        session.run(None, {"embeddings": row})
    result = {
        "version": ort.__version__,
        "latency_us": latency_us(session, row, args.iterations),
        "rows_per_s": {},
    }
    for size in (int(b) for b in args.batches.split(",")):
        batch = np.ascontiguousarray(inputs[:size])
        session.run(None, {"embeddings": batch})
        wall, cpu = rows_per_s(session, batch, args.seconds)
        result["rows_per_s"][str(size)] = wall
        result["rows_per_s"][f"cpu_{size}"] = cpu
    print(json.dumps(result))


if __name__ == "__main__":
    main()
