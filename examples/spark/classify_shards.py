"""Scores Parquet shards of embeddings with gemma_cyber on Spark, exactly once.

    spark-submit [--master ...] [--py-files gemma_cyber-*.whl] classify_shards.py \
        INPUT_DIR OUTPUT_DIR [--column embedding] [--keep id,url] [--backend auto]

Reads every Parquet shard under INPUT_DIR, scores the embedding column (array<float>, 768 values
a row) in each executor's Python workers through `mapInArrow` and the gemma_cyber package, and
writes OUTPUT_DIR as Parquet: the --keep columns, then `probability` (float) and `label` (boolean).
`--backend` names the backend as the CLI's `--backend` does (auto, cpu, onnxruntime or wgpu); the
same backend as a CLI run gives the same probabilities, bit for bit.

Exactly once: the output is written through Spark's file commit protocol, so a retried task's
attempts never both land, and a job that dies leaves no committed output; run again, it replaces
whatever the dead run left (mode "overwrite"), so the result equals a clean run's.

One classifier per Python worker process, created on its first batch and reused by every later
batch and task that process runs (Spark reuses Python workers by default).
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Iterator


def process_classifier(backend: str):
    """The classifier of this Python worker process, created once.

    Kept in a module of its own in sys.modules: the function that Spark ships to the workers is
    unpickled afresh for every task, with fresh globals, but sys.modules lives as long as the
    process does.
    """
    holder = sys.modules.get("_gemma_cyber_spark_worker")
    if holder is None:
        import gemma_cyber

        holder = types.ModuleType("_gemma_cyber_spark_worker")
        holder.classifier = gemma_cyber.Classifier(backend=backend)
        sys.modules[holder.__name__] = holder
    return holder.classifier


def score_batches(column: str, keep: list, backend: str, batches: Iterator) -> Iterator:
    """mapInArrow's function: Arrow record batches in, the kept columns plus probability and label
    out."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    classifier = process_classifier(backend)
    dim = classifier.input_dim
    for batch in batches:
        embeddings = batch.column(column)
        if embeddings.null_count:
            raise ValueError(f"column {column!r} has a null embedding")
        lengths = pc.list_value_length(embeddings).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths.min() != dim or lengths.max() != dim):
            raise ValueError(f"column {column!r} has rows of {lengths.min()}..{lengths.max()} values; the model expects {dim}")
        values = embeddings.flatten()  # the rows' values only, whatever the list's offset
        if values.null_count:
            raise ValueError(f"column {column!r} has a null value inside an embedding")
        rows = values.to_numpy(zero_copy_only=False).reshape(len(batch), dim)
        probabilities, labels = classifier.classify_with_labels(rows)
        columns = [batch.column(name) for name in keep]
        yield pa.RecordBatch.from_arrays(
            columns + [pa.array(probabilities, pa.float32()), pa.array(labels, pa.bool_())],
            names=keep + ["probability", "label"],
        )


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--column", default="embedding", help="the embedding column (array<float>)")
    parser.add_argument("--keep", default="", help="input columns to carry into the output, e.g. id,url")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "cpu", "onnxruntime", "wgpu"], help="the backend each worker runs (default: auto)"
    )
    args = parser.parse_args(argv)
    keep = [name for name in args.keep.split(",") if name]

    from pyspark.sql import SparkSession
    from pyspark.sql.types import BooleanType, FloatType, StructField, StructType

    spark = SparkSession.builder.appName("gemma-cyber classify_shards").getOrCreate()
    shards = spark.read.parquet(args.input_dir)
    missing = [name for name in [args.column, *keep] if name not in shards.columns]
    if missing:
        sys.exit(f"classify_shards: no column {', '.join(missing)} in {args.input_dir} (columns: {', '.join(shards.columns)})")
    schema = StructType(
        [shards.schema[name] for name in keep]
        + [StructField("probability", FloatType(), False), StructField("label", BooleanType(), False)]
    )
    column, backend = args.column, args.backend
    scored = shards.select(column, *keep).mapInArrow(lambda batches: score_batches(column, keep, backend, batches), schema)
    scored.write.mode("overwrite").parquet(args.output_dir)
    spark.stop()


if __name__ == "__main__":
    main()
