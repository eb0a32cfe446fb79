"""interactions.parquet in its final order (user, then position) with bounded memory.

Each domain's survivors wait in the staging folder in raw line order: keys and ratings in one file,
their texts row for row in another (domain.py). The final order interleaves the domains and the
users at random (user ids are a seeded permutation), so the texts cannot stream straight into the
output, and gathering them at random would need them all in memory. Instead they are dealt once into
buckets of consecutive final positions (files in the staging folder), then each bucket, small enough
for memory, is put in order and written as row groups. Memory holds the key columns of all
interactions, one bucket and one batch of texts; the disk holds the surviving texts once more for
the while.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

from unimp_bench.data.contract import COLUMNS
from unimp_bench.data.domain import DomainResult

ROW_GROUP = 1 << 16
BUCKET_TEXT_BYTES = 128 << 20  # texts per bucket, about what the writing step holds at once
_TEXT_COLUMNS = ("review_text", "summary")


def _bucket_rows(rows: int, text_bytes: int, bucket_text_bytes: int) -> int:
    """Rows per bucket: whole row groups, about `bucket_text_bytes` of texts."""
    per_row = max(text_bytes / max(rows, 1), 1.0)
    return max(1, int(bucket_text_bytes / per_row) // ROW_GROUP) * ROW_GROUP


def _deal_texts(
    results: list[DomainResult], destination: np.ndarray, bucket_rows: int, buckets: list[Path]
) -> None:
    """Append every surviving text, with its final position (`dest`), to the file of its bucket."""
    schema = pa.schema([("dest", pa.int64())] + [(c, pa.large_string()) for c in _TEXT_COLUMNS])
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    offset = 0
    try:
        for result in results:
            with pa.OSFile(str(result.texts_path)) as source:
                reader = pa.ipc.open_file(source)
                for index in range(reader.num_record_batches):
                    batch = reader.get_batch(index)
                    dest = destination[offset : offset + batch.num_rows]
                    offset += batch.num_rows
                    bucket = dest // bucket_rows
                    order = np.argsort(bucket, kind="stable")
                    bounds = np.searchsorted(bucket[order], np.arange(len(buckets) + 1))
                    dealt = pa.RecordBatch.from_arrays(
                        [pa.array(dest)] + [batch.column(c) for c in _TEXT_COLUMNS], schema=schema
                    )
                    for b in np.flatnonzero(np.diff(bounds)).tolist():
                        if b not in writers:
                            writers[b] = pa.ipc.new_stream(str(buckets[b]), schema)
                        writers[b].write_batch(dealt.take(order[bounds[b] : bounds[b + 1]]))
    finally:
        for writer in writers.values():
            writer.close()
    if offset != len(destination):
        raise ValueError(f"the staged texts hold {offset} rows for {len(destination)} interactions")


def write_interactions(
    path: Path,
    placement: pl.DataFrame,
    results: list[DomainResult],
    work: Path,
) -> None:
    """interactions.parquet in the order of `placement` (whose `row` numbers the rows of the domains'
    staged files, concatenated in `results` order), ROW_GROUP rows per row group, zstd."""
    rows = placement.height
    destination = np.empty(rows, dtype=np.int64)
    destination[placement.get_column("row").to_numpy()] = np.arange(rows)
    ratings = pl.concat([pl.read_ipc(r.interactions_path, columns=["rating"]) for r in results])
    bucket_rows = _bucket_rows(rows, sum(r.text_bytes for r in results), BUCKET_TEXT_BYTES)
    buckets = [work / f"bucket-{b:05d}.arrows" for b in range(max(1, -(-rows // bucket_rows)))]
    _deal_texts(results, destination, bucket_rows, buckets)
    del destination

    columns = COLUMNS["interactions.parquet"]

    def ordered(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        """The rows in final order, a bucket at a time (polars pulls them as the sink writes)."""
        for b, bucket in enumerate(buckets):
            part = placement.slice(b * bucket_rows, bucket_rows)
            if bucket.exists():
                with pa.OSFile(str(bucket)) as source:
                    texts = pl.from_arrow(pa.ipc.open_stream(source).read_all()).sort("dest")
                bucket.unlink()
            else:  # no rows (an empty dataset)
                texts = pl.DataFrame(schema={"dest": pl.Int64} | {c: pl.String for c in _TEXT_COLUMNS})
            frame = pl.concat(
                [
                    part.with_columns(ratings.get_column("rating").gather(part.get_column("row"))),
                    texts.select(_TEXT_COLUMNS),
                ],
                how="horizontal",
            ).select(list(columns) if with_columns is None else with_columns)
            yield frame if predicate is None else frame.filter(predicate)

    # polars encodes the row groups on its threads while the next bucket is prepared here
    register_io_source(ordered, schema=columns).sink_parquet(
        path, compression="zstd", row_group_size=ROW_GROUP
    )
