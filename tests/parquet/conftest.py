"""Helpers for the Parquet tests: the CLI built by `cargo build --release`, and shards written the
ways pyarrow, pandas and Spark write them."""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CLI = REPO / "target" / "release" / "gemma-cyber"
DIM = 768


def embeddings(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)


def embedding_array(x: np.ndarray, layout: str) -> pa.Array:
    """`fixed32`: FixedSizeList<float32>[768] (pyarrow from a 2-D array); `fixed16`: the same in
    float16; `list32`: List<float32> (what pandas and Spark write)."""
    if layout == "fixed32":
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
    if layout == "fixed16":
        return pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float16).reshape(-1)), DIM)
    if layout == "list32":
        offsets = pa.array(np.arange(0, (len(x) + 1) * DIM, DIM, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
    raise ValueError(layout)


def write_shard(path: pathlib.Path, first_id: int, x: np.ndarray, layout: str = "fixed32", **kwargs) -> None:
    ids = np.arange(first_id, first_id + len(x), dtype=np.int64)
    table = pa.table(
        {
            "id": ids,
            "url": pa.array([f"https://example.com/{i}" for i in ids]),
            "lang": pa.array(["en"] * len(x)),
            "embedding": embedding_array(x, layout),
        }
    )
    pq.write_table(table, path, **kwargs)


def run_cli(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, RUST_BACKTRACE="0")
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"gemma-cyber {' '.join(map(str, args))} exited {result.returncode}: {result.stderr}")
    return result


@pytest.fixture(scope="session", autouse=True)
def built_cli() -> None:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
