"""The one registry of prompt file formats: a format's name → its reader and the file suffixes that
auto-detection takes for it. `config` validates a prompt set's `format` against these names, so this
module stays light: the table readers (pyarrow, `datasets`) are imported when a table is read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PromptSourceError
from .templates import read_yaml
from .text import read_csv, read_json, read_jsonl

if TYPE_CHECKING:
    from .rows import Prompt


@dataclass(frozen=True, slots=True)
class Format:
    read: Callable[[Path], Iterator[Prompt]]
    suffixes: tuple[str, ...] = ()      # lower case; the first one is the one errors suggest
    folder: str | None = None           # a folder is read in this format, named so in errors


def _read_parquet(path: Path) -> Iterator[Prompt]:
    from .tables import read_parquet
    return read_parquet(path)


def _read_hf_dataset(path: Path) -> Iterator[Prompt]:
    from .tables import read_hf_dataset
    return read_hf_dataset(path)


FORMATS: dict[str, Format] = {
    "jsonl": Format(read_jsonl, (".jsonl", ".ndjson")),
    "json": Format(read_json, (".json",)),
    "yaml": Format(read_yaml, (".yaml", ".yml")),
    "csv": Format(read_csv, (".csv",)),
    "parquet": Format(_read_parquet, (".parquet",)),
    "hf": Format(_read_hf_dataset, folder="a save_to_disk folder"),
}


def detect(path: Path) -> Format:
    """The format of a prompt set whose format is `auto`: a folder's, else the one of its file's suffix."""
    if path.is_dir():
        return next(f for f in FORMATS.values() if f.folder)
    suffix = path.suffix.lower()
    found = next((f for f in FORMATS.values() if suffix in f.suffixes), None)
    if found is None:
        known = [*(f.suffixes[0] for f in FORMATS.values() if f.suffixes),
                 *(f.folder for f in FORMATS.values() if f.folder)]
        raise PromptSourceError(f"{path}: unknown prompt file type {path.suffix!r} (use {', '.join(known)}, "
                                "or set format)")
    return found
