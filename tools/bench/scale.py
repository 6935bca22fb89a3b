#!/usr/bin/env python3
"""Benchmarks of the scale-out paths (numbers for docs/BENCHMARKS.md; never a pass/fail test).

    .venv/bin/python3 tools/bench/scale.py [--repeats 5] [--layout list32|fixed32|fixed16] [--spark]

1. The CLI on Parquet shards (one thread) next to the raw classify rate of the same rows in the
   same process setup: CPU-seconds per row of `gemma-cyber classify SHARDS -o OUT --threads 1`
   against CPU-seconds per row of `Classifier(num_threads=1).classify` on 2048-row batches (the
   CLI's batch size). The difference is the cost of reading, converting and writing Parquet.
   CLI runs and raw runs alternate and the share is taken per pair, so that a slower minute on a
   shared machine weighs on both sides alike.
2. Python's `classify` overhead per call: batch-1 calls through the package, next to the same
   call straight through ctypes with preallocated buffers, and `gemma-cyber bench --batches 1`
   (the library without Python).
3. Threads: 1 and 2 Python threads sharing one classifier (the GIL is released in classify).
4. With --spark: examples/spark/classify_shards.py in local[2] on the same shards, rows/s of the
   whole spark-submit (JVM start included).

Each figure is repeated; min and median are printed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "parquet"))
from conftest import CLI, embeddings, write_shard  # noqa: E402

import gemma_cyber  # noqa: E402
from gemma_cyber._library import lib  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(values: list, unit: str) -> str:
    return f"min {min(values):,.1f} {unit}, median {statistics.median(values):,.1f} {unit}"


def bench_cli(shards: pathlib.Path, rows: int, repeats: int, work: pathlib.Path) -> None:
    """CLI runs and raw classify runs alternate, so that a change in the machine's speed (other
    tenants, frequency) hits both sides of each pair alike; the share is computed per pair."""
    cli_rows_per_cpu_s, cli_rows_per_s, raw, shares = [], [], [], []
    x = embeddings(2048, seed=99)
    with gemma_cyber.Classifier(backend="cpu", num_threads=1) as classifier:
        classifier.classify(x)
        for _ in range(repeats):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            before, start = children_cpu(), time.perf_counter()
            subprocess.run([str(CLI), "classify", str(shards), "-o", str(out), "--keep", "id,url", "--backend", "cpu", "--threads", "1"], check=True)
            wall, cpu = time.perf_counter() - start, children_cpu() - before
            cli_rows_per_cpu_s.append(rows / cpu)
            cli_rows_per_s.append(rows / wall)
            calls = max(1, rows // 2048)
            start = time.process_time()
            for _ in range(calls):
                classifier.classify(x)
            raw.append(calls * 2048 / (time.process_time() - start))
            shares.append(1 - cli_rows_per_cpu_s[-1] / raw[-1])
    print(f"CLI on Parquet, 1 thread: rows/CPU-s {summary(cli_rows_per_cpu_s, '')}; rows/s {summary(cli_rows_per_s, '')}")
    print(f"raw classify, 1 thread, batch 2048: rows/CPU-s {summary(raw, '')}")
    print(f"I/O and conversion share of the CLI's CPU time, per CLI/raw pair: min {min(shares) * 100:.1f} %, median {statistics.median(shares) * 100:.1f} %, max {max(shares) * 100:.1f} %")


def bench_python_overhead(repeats: int) -> None:
    x = embeddings(1, seed=5)
    calls = 20000
    with gemma_cyber.Classifier(backend="cpu", num_threads=1) as classifier:
        handle = classifier._handle
        out = np.empty(1, np.float32)
        through_package, through_ctypes = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                classifier.classify(x)
            through_package.append((time.perf_counter() - start) / calls * 1e6)
            start = time.perf_counter()
            data, dest = x.ctypes.data, out.ctypes.data
            for _ in range(calls):
                lib.gemma_cyber_classify(handle, data, 1, 768, dest, None)
            through_ctypes.append((time.perf_counter() - start) / calls * 1e6)
    print(f"batch 1 through gemma_cyber.Classifier.classify: {summary(through_package, 'µs')}")
    print(f"batch 1 straight through ctypes (preallocated): {summary(through_ctypes, 'µs')}")
    native = subprocess.run([str(CLI), "bench", "--backends", "cpu", "--batches", "1", "--threads", "1"], capture_output=True, text=True, check=True)
    print("gemma-cyber bench --batches 1 (no Python):", native.stdout.strip().splitlines()[-1])


def bench_threads(repeats: int) -> None:
    """One shared classifier (num_threads=1 per call), 1 and 2 Python threads calling classify."""
    import threading

    x = embeddings(2048, seed=7)
    calls = 40
    with gemma_cyber.Classifier(backend="cpu", num_threads=1) as classifier:
        for threads in (1, 2):
            rates, busy = [], []
            for _ in range(repeats):
                def work() -> None:
                    for _ in range(calls):
                        classifier.classify(x)
                pool = [threading.Thread(target=work) for _ in range(threads)]
                start, cpu = time.perf_counter(), time.process_time()
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
                wall = time.perf_counter() - start
                rates.append(threads * calls * 2048 / wall)
                busy.append((time.process_time() - cpu) / wall)
            print(f"Python, {threads} thread(s) sharing one classifier: rows/s {summary(rates, '')}; "
                  f"cores busy (CPU-s per wall-s) {summary(busy, '')}")


def bench_spark(shards: pathlib.Path, rows: int, repeats: int, work: pathlib.Path) -> None:
    wheel_dir = work / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "-w", str(wheel_dir), str(REPO / "bindings" / "python")], check=True)
    (wheel,) = wheel_dir.glob("*.whl")
    package = shutil.copy(wheel, wheel_dir / "gemma_cyber.zip")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    tiny = work / "tiny"
    tiny.mkdir()
    write_shard(tiny / "part-00000.parquet", 0, embeddings(1000, seed=1), "list32")

    def job(source: pathlib.Path) -> float:
        out = work / "spark-out"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
             "--py-files", str(package), str(REPO / "examples" / "spark" / "classify_shards.py"), str(source), str(out), "--keep", "id,url"],
            env=env, check=True, capture_output=True,
        )
        return time.perf_counter() - start

    whole, fixed = [], []
    for _ in range(repeats):
        whole.append(job(shards))
        fixed.append(job(tiny))
    print(f"Spark local[2], whole spark-submit of {rows:,} rows: {summary(whole, 's')}; rows/s {summary([rows / t for t in whole], '')}")
    print(f"Spark local[2], the same job on 1,000 rows (start-up and teardown): {summary(fixed, 's')}")
    print(f"Spark local[2], rows/s past start-up (medians): {rows / (statistics.median(whole) - statistics.median(fixed)):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows-per-shard", type=int, default=25_000)
    parser.add_argument("--layout", choices=["list32", "fixed32", "fixed16"], default="list32",
                        help="how the shards store embeddings (list32: what Spark and pandas write)")
    parser.add_argument("--spark", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        shards = work / "shards"
        shards.mkdir()
        for shard in range(args.shards):
            x = embeddings(args.rows_per_shard, seed=shard)
            write_shard(shards / f"part-{shard:05d}.parquet", shard * args.rows_per_shard, x, args.layout)
        rows = args.shards * args.rows_per_shard
        print(f"{args.shards} shards x {args.rows_per_shard:,} rows, {args.layout}")
        bench_cli(shards, rows, args.repeats, work)
        bench_python_overhead(args.repeats)
        bench_threads(args.repeats)
        if args.spark:
            bench_spark(shards, rows, args.repeats, work)


if __name__ == "__main__":
    main()
