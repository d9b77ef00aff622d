"""Writing one export folder: JSONL and zstd Parquet shards per split, the HF dataset, LLaMA-Factory's index.

Rows are buffered in small batches only: memory stays flat however many rows pass through.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .formats import arrow_schema, llamafactory_entry


class SplitWriter:
    """One split's rows → `<split>.jsonl` and `parquet/<split>-NNNNN-of-MMMMM.parquet`."""

    def __init__(self, folder: Path, split: str, fmt: str, shard_rows: int, batch: int = 1000,
                 keep: Sequence[str] = (), extra: Sequence[pa.Field] = (),
                 builders: Mapping[str, Callable[[list[Any]], pa.Array]] | None = None) -> None:
        self.folder, self.split, self.shard_rows, self.batch = folder, split, shard_rows, batch
        self.schema = arrow_schema(fmt, keep)
        for column in extra:   # the shaped answers' columns (harvester.export.shaped)
            self.schema = self.schema.append(column)
        # columns built from a whole batch's values at once (last in the schema), the others row by row
        self.builders = dict(builders or {})
        self._row_schema = pa.schema([f for f in self.schema if f.name not in self.builders])
        self.rows = 0
        self.jsonl = open(folder / f"{split}.jsonl", "w", encoding="utf-8")
        (folder / "parquet").mkdir(exist_ok=True)
        (folder / ".cache").mkdir(exist_ok=True)
        # the same batches as an Arrow stream, from which `write_hf` builds hf/ without re-parsing Parquet
        self.arrow = folder / ".cache" / f"{split}.arrow"
        self._arrow = pa.ipc.new_stream(str(self.arrow), self.schema)
        self.shards: list[Path] = []
        self._parquet: pq.ParquetWriter | None = None
        self._in_shard = 0
        self._buffer: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any], table_row: dict[str, Any] | None = None) -> None:
        """`row` goes to the JSONL file; `table_row` (default: the same) to Parquet and hf/."""
        self.jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._buffer.append(row if table_row is None else table_row)
        self.rows += 1
        if len(self._buffer) >= self.batch or self._in_shard + len(self._buffer) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        while self._buffer:
            if self._parquet is None:
                path = self.folder / "parquet" / f"{self.split}-{len(self.shards):05d}.parquet"
                self.shards.append(path)
                self._parquet = pq.ParquetWriter(path, self.schema, compression="zstd")
                self._in_shard = 0
            take = self._buffer[: self.shard_rows - self._in_shard]
            del self._buffer[: len(take)]
            built = {name: build([row.pop(name) for row in take]) for name, build in self.builders.items()}
            table = pa.Table.from_pylist(take, schema=self._row_schema)
            for name, column in built.items():
                table = table.append_column(self.schema.field(name), column)
            self._parquet.write_table(table)
            self._arrow.write_table(table)
            self._in_shard += len(take)
            if self._in_shard >= self.shard_rows:
                self._parquet.close()
                self._parquet = None

    def close(self) -> list[Path]:
        """Finish the files; shards get their final `-of-N` names. Returns the shard paths."""
        self._flush()
        if self._parquet is not None:
            self._parquet.close()
        if not self.shards:  # an empty split still gets one (empty) shard, so every reader finds it
            path = self.folder / "parquet" / f"{self.split}-00000.parquet"
            pq.write_table(self.schema.empty_table(), path, compression="zstd")
            self.shards.append(path)
        self.jsonl.close()
        self._arrow.close()
        total = len(self.shards)
        final = []
        for i, path in enumerate(self.shards):
            target = path.with_name(f"{self.split}-{i:05d}-of-{total:05d}.parquet")
            path.rename(target)
            final.append(target)
        self.shards = final
        return final


def write_hf(folder: Path, arrows: dict[str, Path]) -> None:
    """`hf/`: the splits as a `datasets.DatasetDict` (save_to_disk), from each split's Arrow stream
    (memory-mapped: the rows are not held in memory, and not converted again as from Parquet)."""
    import datasets

    datasets.disable_progress_bars()  # the export prints its own table
    dd = datasets.DatasetDict({split: datasets.Dataset.from_file(str(path)) for split, path in sorted(arrows.items())})
    # At least one shard per split: datasets cannot load a split saved as zero shards.
    dd.save_to_disk(str(folder / "hf"), num_shards={k: max(1, v.num_rows // 500_000 + 1) for k, v in dd.items()})
    del dd
    shutil.rmtree(folder / ".cache", ignore_errors=True)


def write_llamafactory_info(folder: Path, name: str, fmt: str, splits: list[str]) -> bool:
    """`dataset_info.json` for LLaMA-Factory (dataset_dir = this folder). False if it has no such format."""
    entries = {}
    for split in splits:
        entry = llamafactory_entry(fmt, f"{split}.jsonl")
        if entry is None:
            return False
        entries[name if split == "train" else f"{name}_{split}"] = entry
    (folder / "dataset_info.json").write_text(json.dumps(entries, indent=2) + "\n")
    return True
