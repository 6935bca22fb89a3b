"""The Spark example in local[2] mode, as a user runs it (spark-submit, the package shipped as a
zip): 8 shards and 200,000 rows written as Spark writes arrays (List<float32>); every input row
comes out once with its id; probabilities equal the CLI's on the same rows within 1e-6; a run
killed midway and run again gives the same output as a clean run."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "parquet"))
from conftest import embeddings, run_cli, write_shard  # noqa: E402

SHARDS = 8
ROWS_PER_SHARD = 25_000
SCRIPT = REPO / "examples" / "spark" / "classify_shards.py"
VENV_BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("shards")
    for shard in range(SHARDS):
        x = embeddings(ROWS_PER_SHARD, seed=100 + shard)
        write_shard(directory / f"part-{shard:05d}.parquet", shard * ROWS_PER_SHARD, x, "list32", row_group_size=5000)
    return directory


@pytest.fixture(scope="module")
def package_zip(tmp_path_factory) -> pathlib.Path:
    """The wheel, under a .zip name: Spark puts --py-files ending in .zip (not .whl) on sys.path."""
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "-w", directory, REPO / "bindings" / "python"],
        check=True,
    )
    (wheel,) = directory.glob("gemma_cyber-*.whl")
    return shutil.copy(wheel, directory / "gemma_cyber.zip")


def spark_submit(package_zip, *args) -> list:
    return [
        str(VENV_BIN / "spark-submit"),
        "--master", "local[2]",
        "--conf", "spark.ui.enabled=false",
        "--py-files", str(package_zip),
        str(SCRIPT), *map(str, args),
    ]


def spark_env(tmp) -> dict:
    # Spark's scratch directories and the JVM's temporary files (native libraries it unpacks) go
    # to `tmp` too: by default they land in /tmp, and a killed job never removes its own.
    return dict(
        os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, TMPDIR=str(tmp),
        SPARK_LOCAL_DIRS=str(tmp), SPARK_SUBMIT_OPTS=f"-Djava.io.tmpdir={tmp}",
    )


def run_job(command: list, env: dict) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}"


def read_sorted(directory: pathlib.Path):
    return pq.read_table(directory).sort_by("id")


def test_spark_job_scores_every_row_once_like_the_cli_and_survives_a_kill(shards, package_zip, tmp_path):
    (tmp_path / "tmp").mkdir()
    env = spark_env(tmp_path / "tmp")
    clean = tmp_path / "clean"
    # The CLI's backend, so the probabilities can be compared to the bit (backends agree to 1e-5).
    run_job(spark_submit(package_zip, shards, clean, "--keep", "id,url", "--backend", "cpu"), env)
    result = read_sorted(clean)
    assert result.column_names == ["id", "url", "probability", "label"]
    ids = result.column("id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(SHARDS * ROWS_PER_SHARD))  # every row, once

    cli = tmp_path / "cli"
    run_cli("classify", shards, "-o", cli, "--keep", "id", "--backend", "cpu")
    expected = pq.read_table(cli).sort_by("id")
    np.testing.assert_array_equal(expected.column("id").to_numpy(), ids)
    np.testing.assert_allclose(result.column("probability").to_numpy(), expected.column("probability").to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.column("label").to_numpy(), expected.column("label").to_numpy())

    # Killed once the first task's output is committed (no timing decides the outcome: wherever
    # the kill lands, the rerun must equal the clean run).
    killed = tmp_path / "killed"
    job = subprocess.Popen(
        spark_submit(package_zip, shards, killed, "--keep", "id,url", "--backend", "cpu"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    while job.poll() is None and not list(killed.glob("_temporary/*/task_*/*.parquet")):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (killed / "_SUCCESS").exists() or job.returncode == 0
    run_job(spark_submit(package_zip, shards, killed, "--keep", "id,url", "--backend", "cpu"), env)
    assert read_sorted(killed).equals(result)
