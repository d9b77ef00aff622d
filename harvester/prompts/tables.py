"""Prompt sets stored as tables: Parquet files and local Hugging Face datasets (`save_to_disk` folders).

Rows are read in batches (memory stays flat however big the set) and become prompts through
`harvester.prompts.rows.table_row`, as CSV rows do; errors name the file and the row number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import PromptSourceError
from .rows import Prompt, need_a_shape, table_row

BATCH = 1024


def read_parquet(path: Path) -> Iterator[Prompt]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except FileNotFoundError:
        raise PromptSourceError(f"{path}: no such prompt file") from None
    except (OSError, pa.ArrowException) as e:
        raise PromptSourceError(f"{path}: not a readable Parquet file ({e})") from None
    need_a_shape(table.schema_arrow.names, f"{path}: the table")
    yield from _rows((batch.to_pylist() for batch in table.iter_batches(batch_size=BATCH)), path)


def read_hf_dataset(path: Path) -> Iterator[Prompt]:
    """A folder written by `Dataset.save_to_disk`, or a `DatasetDict`'s (its `train` split, or its only one)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise PromptSourceError(f"{path}: not a dataset folder written by save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" not in splits and len(splits) != 1:
            raise PromptSourceError(f"{path}: a dataset with splits {splits}: point at one split's folder")
        loaded = loaded["train" if "train" in splits else splits[0]]
    need_a_shape(loaded.column_names, f"{path}: the dataset")
    batches = (_as_rows(b) for b in loaded.iter(batch_size=BATCH))
    yield from _rows(batches, path)


def _as_rows(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(batch)
    return [dict(zip(names, values)) for values in zip(*batch.values())]


def _rows(batches: Iterator[list[dict[str, Any]]], path: Path) -> Iterator[Prompt]:
    n = 0
    for rows in batches:
        for values in rows:
            n += 1
            yield table_row(values, f"{path}:row {n}")
