"""`gemma-cyber classify` on Parquet: layouts, carried columns, shard directories and globs,
atomic outputs and resume after a kill, and every bad input (exit code, one-line message, nothing
written)."""

from __future__ import annotations

import os
import pathlib
import resource
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gemma_cyber
from conftest import CLI, DIM, embeddings, run_cli, write_shard


def reference(x: np.ndarray) -> tuple:
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        return classifier.classify_with_labels(x)


@pytest.mark.parametrize("layout", ["fixed32", "fixed16", "list32"])
def test_one_file_keeps_columns_and_matches_the_library(tmp_path, layout):
    x = embeddings(3000, seed=1)
    source = tmp_path / "in.parquet"
    write_shard(source, 100, x, layout, row_group_size=1000)
    out = tmp_path / "out.parquet"
    result = run_cli("classify", source, "-o", out, "--keep", "id,url", "--backend", "cpu")
    assert result.stdout == "" and result.stderr == "", "quiet when stderr is not a terminal"
    table = pq.read_table(out)
    assert table.column_names == ["id", "url", "probability", "label"]
    assert table.schema.field("probability").type == pa.float32()
    assert table.schema.field("label").type == pa.bool_()
    assert table.column("id").to_pylist() == list(range(100, 3100))
    assert table.column("url").to_pylist()[5] == "https://example.com/105"
    expected = x.astype(np.float16).astype(np.float32) if layout == "fixed16" else x
    probabilities, labels = reference(expected)
    np.testing.assert_allclose(table.column("probability").to_numpy(), probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels)


def test_column_option_names_the_embedding(tmp_path):
    x = embeddings(10, seed=2)
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)}), source)
    out = tmp_path / "out.parquet"
    run_cli("classify", source, "-o", out, "--column", "vec", "--backend", "cpu")
    table = pq.read_table(out)
    assert table.column_names == ["probability", "label"]
    np.testing.assert_allclose(table.column("probability").to_numpy(), reference(x)[0], rtol=0, atol=1e-6)


def test_kept_dates_and_spark_timestamps_come_out_as_readers_see_them(tmp_path):
    """A Date64 is written as Parquet's DATE (a bare INT64 read back as integers, not dates), and
    INT96 timestamps, Spark's, are read as microseconds as Spark reads them: as nanoseconds, every
    date outside 1677-2262 (sentinels such as 0001-01-01) wrapped around silently."""
    import datetime

    x = embeddings(4, seed=3)
    moments = [datetime.datetime(1, 1, 1), datetime.datetime(2024, 5, 1, 12, 0, 0, 7), datetime.datetime(9999, 12, 31), None]
    days = [datetime.date(1, 1, 1), datetime.date(2024, 5, 1), None, datetime.date(9999, 12, 31)]
    struct = pa.struct([("at", pa.timestamp("us"))])
    table = pa.table(
        {
            "ts": pa.array(moments, pa.timestamp("us")),
            "nested": pa.array([{"at": m} for m in moments], struct),
            "listed": pa.array([[m] for m in moments], pa.list_(pa.timestamp("us"))),
            "day": pa.array(days, pa.date64()),
            "days": pa.array([[d] for d in days], pa.list_(pa.date64())),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM),
        }
    )
    source = tmp_path / "spark.parquet"
    pq.write_table(table, source, use_deprecated_int96_timestamps=True, store_schema=False)
    out = tmp_path / "out.parquet"
    run_cli("classify", source, "-o", out, "--keep", "ts,nested,listed,day,days", "--backend", "cpu")
    got = pq.read_table(out)
    assert got.column("ts").to_pylist() == moments
    assert got.column("nested").to_pylist() == [{"at": m} for m in moments]
    assert got.column("listed").to_pylist() == [[m] for m in moments]
    assert got.schema.field("day").type == pa.date32()
    assert got.column("day").to_pylist() == days
    assert got.column("days").to_pylist() == [[d] for d in days]
    # Timestamps that arrow writers store as INT64 nanoseconds keep every digit.
    nanos = pa.array([0, 1, 2, None], pa.timestamp("ns"))
    pq.write_table(pa.table({"ns": nanos, "embedding": table.column("embedding")}), source)
    run_cli("classify", source, "-o", out, "--keep", "ns", "--backend", "cpu")
    assert pq.read_table(out).column("ns").type == pa.timestamp("ns")
    assert pq.read_table(out).column("ns").to_pylist() == nanos.to_pylist()


def make_shards(directory: pathlib.Path, count: int, rows: int) -> np.ndarray:
    directory.mkdir()
    x = embeddings(count * rows, seed=3)
    for shard in range(count):
        write_shard(directory / f"part-{shard:05d}.parquet", shard * rows, x[shard * rows : (shard + 1) * rows])
    (directory / "_SUCCESS").write_bytes(b"")  # Spark's marker: not a shard
    return x


def read_outputs(directory: pathlib.Path) -> dict:
    """Every visible output (a killed run may leave its hidden temporary file)."""
    return {p.name: pq.read_table(p) for p in sorted(directory.iterdir()) if not p.name.startswith(".")}


def test_directory_gives_one_output_per_shard_and_resumes(tmp_path):
    x = make_shards(tmp_path / "in", 4, 500)
    out = tmp_path / "out"
    run_cli("classify", tmp_path / "in", "-o", out, "--keep", "id", "--backend", "cpu")
    outputs = read_outputs(out)
    assert list(outputs) == [f"part-{i:05d}.parquet" for i in range(4)]
    ids = np.concatenate([t.column("id").to_numpy() for t in outputs.values()])
    np.testing.assert_array_equal(ids, np.arange(2000))
    probabilities = np.concatenate([t.column("probability").to_numpy() for t in outputs.values()])
    np.testing.assert_allclose(probabilities, reference(x)[0], rtol=0, atol=1e-6)

    # Resume: existing outputs are left alone (even a different file under an output name shows
    # they were not rewritten); a missing one is made again, identical.
    (out / "part-00002.parquet").unlink()
    marker = out / "part-00001.parquet"
    marker.write_bytes(b"an earlier run's output")
    run_cli("classify", tmp_path / "in", "-o", out, "--keep", "id", "--backend", "cpu")
    assert marker.read_bytes() == b"an earlier run's output"
    assert pq.read_table(out / "part-00002.parquet").equals(outputs["part-00002.parquet"])


def test_more_shards_than_open_files_allowed(tmp_path):
    """A run over thousands of shards must not hold one file open per shard: here 60 shards under
    a limit of 40 open files."""
    x = make_shards(tmp_path / "in", 60, 20)
    out = tmp_path / "out"
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))  # noqa: E731
    result = subprocess.run([str(CLI), "classify", tmp_path / "in", "-o", out, "--keep", "id", "--backend", "cpu"],
                            capture_output=True, text=True, preexec_fn=limit)
    assert result.returncode == 0, result.stderr
    outputs = read_outputs(out)
    assert len(outputs) == 60
    ids = np.concatenate([t.column("id").to_numpy() for t in outputs.values()])
    np.testing.assert_array_equal(ids, np.arange(1200))
    probabilities = np.concatenate([t.column("probability").to_numpy() for t in outputs.values()])
    np.testing.assert_allclose(probabilities, reference(x)[0], rtol=0, atol=1e-6)


def test_quoted_glob_selects_shards(tmp_path):
    make_shards(tmp_path / "in", 3, 100)
    out = tmp_path / "out"
    run_cli("classify", tmp_path / "in" / "part-0000[12]*.parquet".replace("[12]", "?"), "-o", out, "--backend", "cpu")
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
    out2 = tmp_path / "out2"
    run_cli("classify", tmp_path / "in" / "*1.parquet", "-o", out2, "--backend", "cpu")
    assert sorted(p.name for p in out2.iterdir()) == ["part-00001.parquet"]


def test_a_file_named_like_a_glob_is_read_as_that_file(tmp_path):
    """A shell passes an unmatched glob on as it is, so a name with `*` or `?` is a glob only when
    no file has that very name."""
    (tmp_path / "emb?.jsonl").write_text("[" + ", ".join(["0.0"] * DIM) + "]\n")
    result = run_cli("classify", tmp_path / "emb?.jsonl", "--backend", "cpu", "--format", "csv")
    assert result.stdout.count("\n") == 2  # the header and the row


def test_killed_run_leaves_only_complete_outputs_and_rerun_equals_a_clean_run(tmp_path):
    make_shards(tmp_path / "in", 6, 4000)
    clean = tmp_path / "clean"
    run_cli("classify", tmp_path / "in", "-o", clean, "--keep", "id,url", "--backend", "cpu", "--threads", "1")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [str(CLI), "classify", str(tmp_path / "in"), "-o", str(out), "--keep", "id,url", "--backend", "cpu", "--threads", "1"]
    )
    # Kill it once the first shard is done and before the last one is (no timing decides the
    # outcome: whatever the moment of the kill, the checks below must hold).
    while process.poll() is None and not (out.exists() and any(p.suffix == ".parquet" and not p.name.startswith(".") for p in out.iterdir())):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = read_outputs(out)
    assert 1 <= len(killed) < 6 or process.returncode == 0
    for name, table in killed.items():  # every visible output is complete, never torn
        assert table.equals(pq.read_table(clean / name)), name
    run_cli("classify", tmp_path / "in", "-o", out, "--keep", "id,url", "--backend", "cpu", "--threads", "1")
    assert sorted(out.iterdir()) == sorted(out / p.name for p in clean.iterdir()), "no temporary file is left"
    for name, table in read_outputs(clean).items():
        assert pq.read_table(out / name).equals(table), name


def expect_failure(code: int, *args: object, fragments: tuple = ()) -> str:
    result = run_cli(*args, check=False)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("gemma-cyber: error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_inputs_exit_with_their_code_and_write_nothing(tmp_path):
    good = tmp_path / "good.parquet"
    write_shard(good, 0, embeddings(20, seed=4))
    out = tmp_path / "out.parquet"

    expect_failure(2, "classify", good, fragments=("-o",))
    expect_failure(3, "classify", tmp_path / "missing.parquet", "-o", out, fragments=("missing.parquet",))
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("[1.0]\n")
    expect_failure(2, "classify", jsonl, "-o", out, fragments=("Parquet",))
    expect_failure(2, "classify", good, "-o", good, fragments=("input",))
    expect_failure(3, "classify", good, "-o", out, "--column", "vector", fragments=("vector", "id, url, lang, embedding"))
    expect_failure(3, "classify", good, "-o", out, "--keep", "id,title", fragments=("title",))
    expect_failure(3, "classify", good, "-o", out, "--column", "url", fragments=("FixedSizeList",))
    expect_failure(2, "classify", good, "-o", out, "--keep", "probability", fragments=("probability",))
    # Two output columns of one name make a file Arrow readers cannot look columns up in.
    expect_failure(2, "classify", good, "-o", out, "--keep", "id,id", fragments=("--keep id", "more than once"))
    # Named as Parquet but not Parquet: a malformed input, not a misused option.
    not_parquet = tmp_path / "not.parquet"
    not_parquet.write_bytes(b"")
    expect_failure(3, "classify", not_parquet, "-o", out, fragments=("not.parquet", "PAR1"))

    # A codec this build does not read, in a kept column only: named before any shard is read;
    # in a column that is not read, no obstacle.
    brotli = tmp_path / "brotli.parquet"
    pq.write_table(pq.read_table(good), brotli, compression={"id": "brotli", "url": "snappy", "lang": "snappy", "embedding": "snappy"})
    expect_failure(3, "classify", brotli, "-o", out, "--keep", "id", fragments=("brotli.parquet", 'column "id" is compressed with Brotli', "Zstandard"))
    run_cli("classify", brotli, "-o", out, "--keep", "url", "--backend", "cpu")
    assert pq.read_table(out).column("url").to_pylist() == pq.read_table(good).column("url").to_pylist()
    out.unlink()

    # Two columns of one name: the one meant cannot be told, so neither is read.
    twice = tmp_path / "twice.parquet"
    table = pq.read_table(good)
    pq.write_table(pa.Table.from_arrays([table["id"], table["id"], table["embedding"]], names=["id", "id", "embedding"]), twice)
    expect_failure(3, "classify", twice, "-o", out, "--keep", "id", fragments=("twice.parquet", '2 columns are named "id"'))
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.Table.from_arrays([table["embedding"], table["embedding"]], names=["embedding", "embedding"]), doubled)
    expect_failure(3, "classify", doubled, "-o", out, fragments=('2 columns are named "embedding"',))

    narrow = tmp_path / "narrow.parquet"
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(384 * 3, np.float32)), 384)}), narrow)
    expect_failure(12, "classify", narrow, "-o", out, fragments=("384", "768"))

    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"embedding": pa.array([[0.0] * DIM, [0.0] * 10], pa.list_(pa.float32()))}), ragged)
    expect_failure(12, "classify", ragged, "-o", out, fragments=("row 1", "10 values"))

    x = embeddings(20, seed=5)
    x[7, 3] = np.nan
    nan = tmp_path / "nan.parquet"
    write_shard(nan, 0, x)
    expect_failure(13, "classify", nan, "-o", out, fragments=("nan.parquet", "row 7"))

    nulls = tmp_path / "null.parquet"
    pq.write_table(pa.table({"embedding": pa.array([[0.0] * DIM, None], pa.list_(pa.float32(), DIM))}), nulls)
    expect_failure(3, "classify", nulls, "-o", out, fragments=("row 1", "null"))

    torn = tmp_path / "torn.parquet"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect_failure(3, "classify", torn, "-o", out, fragments=("torn.parquet",))

    empty = tmp_path / "empty"
    empty.mkdir()
    expect_failure(3, "classify", empty, "-o", tmp_path / "empty-out", fragments=("no Parquet shards",))
    expect_failure(2, "classify", empty, "-o", empty)
    expect_failure(2, "classify", empty, "-o", good)

    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert pq.read_table(good).num_rows == 20  # the input refused as output is untouched


@pytest.mark.parametrize("nullable", [True, False])
@pytest.mark.parametrize("fixed", [True, False])
def test_embedding_problems_are_found_at_their_row_in_any_row_group(tmp_path, fixed, nullable):
    """Rows far into a shard, in a later row group and batch, with lists and values that may or may
    not be nullable (the Parquet levels differ): each problem is reported at its shard row."""
    rows = 5000  # row groups of 1,500 rows, batches of 2,048: both boundaries are crossed
    item = pa.field("item", pa.float32(), nullable=nullable)
    list_type = pa.list_(item, DIM) if fixed else pa.list_(item)
    x = embeddings(rows, seed=9)
    out = tmp_path / "out.parquet"

    def shard(name, values):
        schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("embedding", list_type, nullable=nullable)])
        table = pa.table({"id": np.arange(rows), "embedding": pa.array(values, list_type)}, schema=schema)
        path = tmp_path / name
        pq.write_table(table, path, row_group_size=1500)
        return path

    clean = shard("clean.parquet", list(x))
    assert run_cli("classify", clean, "-o", out, "--keep", "id", "--backend", "cpu").returncode == 0
    probabilities = pq.read_table(out)["probability"].to_numpy()
    np.testing.assert_allclose(probabilities, reference(x)[0], atol=1e-6)
    out.unlink()

    if nullable:
        values = list(x)
        values[4321] = None
        expect_failure(3, "classify", shard("null-row.parquet", values), "-o", out, fragments=("row 4321", "the embedding is null"))
        values = [list(map(float, row)) for row in x[:rows]]
        values[3210][17] = None
        expect_failure(3, "classify", shard("null-value.parquet", values), "-o", out, fragments=("row 3210", "value 17 of the embedding is null"))
    values = x.copy()
    values[4500, 3] = np.nan  # in the third batch: counted from the shard's first row, not the batch's
    expect_failure(13, "classify", shard("nan.parquet", list(values)), "-o", out, fragments=("row 4500 column 3 is NaN",))
    if not fixed:
        values = list(x)
        values[2100] = x[2100][:700]
        expect_failure(12, "classify", shard("short.parquet", values), "-o", out, fragments=("row 2100", "700 values", "768"))
        values[2100] = []
        expect_failure(12, "classify", shard("empty.parquet", values), "-o", out, fragments=("row 2100", "0 values"))
    assert not out.exists()


def test_progress_bar_on_a_terminal(tmp_path):
    import os
    import pty

    make_shards(tmp_path / "in", 2, 3000)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(CLI), "classify", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--backend", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait() == 0
    os.close(leader)
    text = screen.decode("utf-8", "replace")
    assert "rows" in text and "6,000" in text, text


@pytest.mark.parametrize("nullable", [True, False])
@pytest.mark.parametrize("fixed", [True, False])
def test_every_page_layout_decodes_bit_identically(tmp_path, fixed, nullable):
    """The embedding column's pages as pyarrow writes them, with dictionary on and off, V1 and V2
    data pages, every codec read (Snappy, none, Zstandard, gzip, LZ4), in several row groups of small pages (two rows each:
    pyarrow ends pages at row ends; rows split across pages are in the unit tests of
    shard_reader/pages.rs), a dictionary that gives way to PLAIN pages within a chunk: every output
    equal, bit for bit, to that of a BYTE_STREAM_SPLIT shard (an encoding the CLI's page decoder
    leaves to parquet's column reader, the path used before it), and problems found at their row."""
    rows = 1300
    item = pa.field("item", pa.float32(), nullable=nullable)
    list_type = pa.list_(item, DIM) if fixed else pa.list_(item)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("embedding", list_type, nullable=nullable)])
    x = embeddings(rows, seed=12)
    x[::3, ::4] = x[0, ::4]  # values that repeat: the dictionary outlives its first pages

    def shard(name, values, **options):
        path = tmp_path / name
        table = pa.table({"id": np.arange(rows), "embedding": pa.array(values, list_type)}, schema=schema)
        pq.write_table(table, path, row_group_size=500, data_page_size=2000, dictionary_pagesize_limit=40_000, **options)
        return path

    def classify(path):
        out = path.with_suffix(".out.parquet")
        run_cli("classify", path, "-o", out, "--keep", "id", "--backend", "cpu", "--threads", "1")
        return pq.read_table(out)

    reference_shard = shard("split.parquet", list(x), use_dictionary=False, column_encoding={"embedding.list.element": "BYTE_STREAM_SPLIT"})
    assert "BYTE_STREAM_SPLIT" in pq.ParquetFile(reference_shard).metadata.row_group(0).column(1).encodings
    expected = classify(reference_shard)
    np.testing.assert_allclose(expected["probability"].to_numpy(), reference(x)[0], rtol=0, atol=1e-6)

    broken = [list(map(float, row)) for row in x]
    if nullable:
        broken[1234][17] = None
        problem = (3, ("row 1234", "value 17 of the embedding is null"))
    elif not fixed:
        broken[777] = broken[777][:700]
        problem = (12, ("row 777", "700 values", "768"))
    else:
        problem = None
    for dictionary in (True, False):
        for version in ("1.0", "2.0"):
            for compression in ("snappy", "none", "zstd", "gzip", "lz4"):
                options = dict(use_dictionary=dictionary, data_page_version=version, compression=compression)
                name = f"dictionary-{dictionary}-v{version}-{compression}"
                path = shard(f"{name}.parquet", list(x), **options)
                metadata = pq.ParquetFile(path).metadata
                assert metadata.num_row_groups == 3
                assert ("RLE_DICTIONARY" in metadata.row_group(0).column(1).encodings) == dictionary
                assert classify(path).equals(expected), name
                if problem:
                    code, fragments = problem
                    out = tmp_path / "out.parquet"
                    expect_failure(code, "classify", shard(f"{name}-broken.parquet", broken, **options), "-o", out, fragments=fragments)
                    assert not out.exists()


def test_output_directory_that_holds_the_input_is_refused(tmp_path):
    """`-o .` beside the input names the input once the file name is joined on: refused like
    `-o INPUT`, whichever path leads there (`sub/..`, a link), and the input is left untouched."""
    good = tmp_path / "good.parquet"
    write_shard(good, 0, embeddings(20, seed=6))
    before = good.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path)
    for output in (tmp_path, tmp_path / "sub" / "..", tmp_path / "link"):
        expect_failure(2, "classify", good, "-o", output, "--keep", "id", fragments=("must not be the input",))
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.parquet", "link", "sub"]


def test_output_directory_that_is_a_bare_globs_directory_is_refused(tmp_path):
    """A glob with no directory part (`part-*.parquet`, run where the shards are) and `-o .`:
    the output directory is the input directory, refused like any other path to it."""
    write_shard(tmp_path / "part-1.parquet", 0, embeddings(20, seed=6))
    env = dict(os.environ, RUST_BACKTRACE="0")
    result = subprocess.run(
        [str(CLI), "classify", "part-*.parquet", "-o", "."], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "the output directory must not be the input directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-1.parquet"]


def test_an_output_ending_in_a_slash_is_a_directory_made_for_it(tmp_path):
    """`-o scored/` for one file names a directory, as for shards: made, and the output written
    in it under the input's name (before, the whole file was classified, then the rename failed)."""
    good = tmp_path / "good.parquet"
    write_shard(good, 0, embeddings(20, seed=8))
    run_cli("classify", good, "-o", f"{tmp_path / 'scored'}/", "--backend", "cpu")
    assert pq.read_table(tmp_path / "scored" / "good.parquet").num_rows == 20


def test_output_that_names_no_file_is_refused(tmp_path):
    """`-o missing/..` is no directory (it does not exist) and has no file name to write under."""
    good = tmp_path / "good.parquet"
    write_shard(good, 0, embeddings(20, seed=7))
    expect_failure(2, "classify", good, "-o", tmp_path / "missing" / "..", fragments=("names no output file",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.parquet"]


def zigzag_varint(value: int) -> bytes:
    """An i32 as Thrift's compact protocol writes it."""
    value = (value << 1) ^ (value >> 31)
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def patch_page_row_count(path: pathlib.Path, column: int, values: int, claimed: int) -> None:
    """Makes the first data page of `column` in row group 0 claim `claimed` values instead of
    `values`, as a faulty writer or a flipped bit would: the num_values that opens the page
    header's DataPageHeader (field 5, a struct: 0x2c; its field 1, an i32: 0x15)."""
    data = bytearray(path.read_bytes())
    start = pq.ParquetFile(path).metadata.row_group(0).column(column).data_page_offset
    old, new = (b"\x2c\x15" + zigzag_varint(n) for n in (values, claimed))
    assert len(old) == len(new)
    at = data.index(old, start, start + 32)
    data[at : at + len(new)] = new
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("layout", ["fixed32", "fixed16"])
@pytest.mark.parametrize("keep", ["id", "id,url"])
def test_a_column_that_gives_a_row_group_fewer_rows_is_refused(tmp_path, layout, keep):
    """Each column is decoded on its own: a page that gives `id` 90 rows of row group 0's 100 would
    pair every later id with another row's embedding. pyarrow refuses such a file; so must the
    CLI, naming the row group, and write nothing."""
    source = tmp_path / "in.parquet"
    write_shard(source, 0, embeddings(300, seed=8), layout, row_group_size=100, use_dictionary=False)
    run_cli("classify", source, "-o", tmp_path / "clean.parquet", "--keep", keep, "--backend", "cpu")
    patch_page_row_count(source, 0, 100, 90)
    with pytest.raises(Exception):
        pq.read_table(source)
    out = tmp_path / "out.parquet"
    expect_failure(3, "classify", source, "-o", out, "--keep", keep, "--backend", "cpu", fragments=("in.parquet", "row group 0"))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.parquet", "in.parquet"]


def test_an_embedding_column_that_gives_a_row_group_fewer_rows_is_refused(tmp_path):
    """The same with the embedding column's page short of rows, whether other columns are kept
    or none are (then the row group's count comes from the metadata alone)."""
    source = tmp_path / "in.parquet"
    write_shard(source, 0, embeddings(300, seed=10), "list32", row_group_size=100, use_dictionary=False, data_page_size=1 << 30)
    patch_page_row_count(source, 3, 100 * DIM, 90 * DIM)
    out = tmp_path / "out.parquet"
    for keep in (("--keep", "id"), ()):
        expect_failure(3, "classify", source, "-o", out, *keep, "--backend", "cpu", fragments=("in.parquet", "row group 0"))
    assert not out.exists()


def test_a_pipe_is_opened_once_and_read_from_its_first_byte(tmp_path):
    """A FIFO or `<(...)` (a pipe under /dev/fd) is read as JSON lines or `.npy` like a file: the
    Parquet check must not open it first (a FIFO's writer would be gone by the second open, and
    the bytes looked at would be gone from a pipe), nor open it at all to refuse -o. Every run is
    bounded by a timeout: a hang fails the test instead of stalling it."""
    import io
    import json
    import os
    import threading

    x = embeddings(3, seed=11)
    lines = "".join(json.dumps([float(v) for v in row]) + "\n" for row in x).encode()
    npy = io.BytesIO()
    np.save(npy, x)
    regular = tmp_path / "x.jsonl"
    regular.write_bytes(lines)
    expected = run_cli("classify", regular, "--backend", "cpu").stdout
    assert len(expected.splitlines()) == 1 + 3  # a header, then a line per row

    def write_in_background(open_writer, data):
        def write():
            with open_writer() as pipe:
                pipe.write(data)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for data in (lines, npy.getvalue()):
        writer = write_in_background(lambda: open(fifo, "wb"), data)
        result = subprocess.run([str(CLI), "classify", str(fifo), "--backend", "cpu"], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr, result.stdout) == (0, "", expected)
        writer.join(timeout=10)

        read_end, write_end = os.pipe()
        writer = write_in_background(lambda: os.fdopen(write_end, "wb"), data)
        result = subprocess.run([str(CLI), "classify", f"/dev/fd/{read_end}", "--backend", "cpu"],
                                capture_output=True, text=True, timeout=60, pass_fds=(read_end,))
        os.close(read_end)
        assert (result.returncode, result.stderr, result.stdout) == (0, "", expected)
        writer.join(timeout=10)

    # No writer ever comes: refusing -o must not wait for one.
    result = subprocess.run([str(CLI), "classify", str(fifo), "-o", str(tmp_path / "out.parquet")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_a_shard_the_parquet_decoder_panics_on_is_a_bad_input(tmp_path):
    """The parquet crate panics, rather than failing, on a float16 dictionary index past the
    dictionary's end. That is a corrupt shard like any other: exit 3 and one line, not exit 101
    with a panic message, and no output nor temporary file left."""
    rng = np.random.default_rng(13)
    x = rng.integers(0, 4, (20, DIM)).astype(np.float16)  # four distinct values: indices of 2 bits
    source = tmp_path / "in.parquet"
    table = pa.table({"id": np.arange(20), "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)})
    pq.write_table(table, source, compression="none", use_dictionary=True, data_page_version="1.0")
    chunk = pq.ParquetFile(source).metadata.row_group(0).column(1)
    assert "RLE_DICTIONARY" in chunk.encodings
    # The one data page: its header, then repetition and definition levels (each after its length
    # in 4 bytes), then the indices' bit width in 1 byte. The header's length is the one at which
    # it gives the page's size (uncompressed: the rest of the chunk).
    data = bytearray(source.read_bytes())
    end = chunk.dictionary_page_offset + chunk.total_compressed_size
    header = next(n for n in range(8, 200) if data[chunk.data_page_offset :].startswith(
        b"\x15\x00\x15" + zigzag_varint(end - chunk.data_page_offset - n)))
    start = chunk.data_page_offset + header
    repetition = int.from_bytes(data[start : start + 4], "little")
    definition = int.from_bytes(data[start + 4 + repetition : start + 8 + repetition], "little")
    width = start + 8 + repetition + definition
    assert data[width] == 2
    data[width] = 8  # the same bytes read 8 bits at a time: indices up to 255 of 4 entries
    source.write_bytes(bytes(data))

    out = tmp_path / "out.parquet"
    message = expect_failure(3, "classify", source, "-o", out, "--keep", "id", "--backend", "cpu",
                             fragments=("in.parquet", "corrupt"))
    assert "panicked" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
