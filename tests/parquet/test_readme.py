"""The README's "Classify shards at scale" commands, run literally: the CLI lines in a directory
holding `shard.parquet` and `shards/`, and the Python snippet."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

import gemma_cyber
from conftest import CLI, REPO, embeddings, write_shard


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Classify shards at scale")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_cli_commands_do_what_they_say(tmp_path):
    block = re.search(r"\*\*One machine, the CLI\.\*\*.*?```sh\n(.*?)```", section(), re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and all(c.startswith("gemma-cyber classify ") for c in commands)
    x = embeddings(300, seed=8)
    write_shard(tmp_path / "shard.parquet", 0, x[:100])
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "part-00000.parquet", 100, x[100:200])
    write_shard(tmp_path / "shards" / "part-00001.parquet", 200, x[200:])
    env = dict(os.environ, PATH=f"{CLI.parent}:{os.environ['PATH']}")
    with gemma_cyber.Classifier() as classifier:
        expected = classifier.classify(x)
    for command in commands:
        subprocess.run(command, shell=True, check=True, cwd=tmp_path, env=env)
        scored = pq.read_table(tmp_path / ("scored.parquet" if "scored.parquet" in command else "scored"))
        assert scored.column_names == ["id", "url", "probability", "label"]
        ids = scored.column("id").to_numpy()
        np.testing.assert_allclose(scored.column("probability").to_numpy(), expected[ids], rtol=0, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "scored").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]


def test_readme_python_snippet_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", section(), re.S).group(1)
    x = embeddings(50, seed=9)
    write_shard(tmp_path / "shard.parquet", 0, x, "fixed32")
    code += "\nimport numpy; numpy.save('out.npy', probabilities)\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    with gemma_cyber.Classifier() as classifier:
        expected = classifier.classify(x)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=1e-5)
