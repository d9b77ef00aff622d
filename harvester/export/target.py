"""Which folder an export may replace: one that is missing, empty, or a previous export of the same job.

An export swaps its whole folder in, so whatever the folder held is gone afterwards. A previous
export is recognised by the marker it wrote (`.harvester-export.json`: job, format, the files it
wrote); anything else in the way (the store, the job file, a prompt set, a user's notes, the current
folder) is refused with a ConfigError (exit 2) naming it. The check runs before any work is done and
again right before the swap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MARKER = ".harvester-export.json"
# What an export writes at its top level: a folder holding only these (and stats.json) is an export
# written before the marker existed.
EXPORT_NAMES = frozenset({"train.jsonl", "test.jsonl", "parquet", "hf", "dataset_info.json", "README.md",
                          "rejected.jsonl", "stats.json", "plots", MARKER})
Protected = tuple[str, Path]   # (what it is, e.g. "the store"; its path)


def absolute(out: Path) -> Path:
    """`out` made absolute without resolving symlinks (`.` and `..` folded)."""
    return Path(os.path.abspath(out))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _names(entries: Iterable[str], limit: int = 3) -> str:
    shown = sorted(entries)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _refuse(out: Path, why: str, job: str) -> ConfigError:
    instead = out.parent / job if out.is_file() else out / job
    return ConfigError(f"export folder {out}: {why}. An export replaces its whole folder: give --out (or "
                       f"export.out) a new or empty folder, or a previous export of this job, e.g. {instead}")


def read_marker(out: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    valid = isinstance(marker, dict) and isinstance(marker.get("job"), str) and isinstance(marker.get("files"), list)
    return marker if valid else None


def _legacy_export(out: Path, entries: list[str]) -> bool:
    """A folder written by an export older than the marker: export files only, with its stats.json."""
    if not set(entries) <= EXPORT_NAMES or "stats.json" not in entries:
        return False
    try:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stats, dict) and {"format", "selected", "rows"} <= stats.keys()


def previous_export(out: Path, job: str, protected: Iterable[Protected] = ()) -> dict[str, Any] | None:
    """What `out` holds if an export of `job` may replace it: None (missing or empty), or the previous
    export's marker ({} for an export older than markers). Raises ConfigError naming what is in the way."""
    out = absolute(out)
    _check_place(out, job, protected)
    if not out.exists():
        return None
    if not out.is_dir():
        raise _refuse(out, "is a file, not a folder", job)
    return _check_contents(out, job)


def _check_place(out: Path, job: str, protected: Iterable[Protected]) -> None:
    """Refuse the root, the current folder (or one holding it), and anything holding a protected path."""
    if out.parent == out:
        raise _refuse(out, "is the root of the filesystem", job)
    real = out.resolve()
    try:
        here = Path.cwd().resolve()
    except FileNotFoundError:       # the current folder was removed: nothing of it to protect
        here = None
    if here is not None and _within(here, real):
        raise _refuse(out, "is the current folder" if here == real else "holds the current folder", job)
    for what, path in protected:
        if _within(path.resolve(), real):
            raise _refuse(out, f"{'is' if path.resolve() == real else 'holds'} {what} {path}", job)


def _check_contents(out: Path, job: str) -> dict[str, Any] | None:
    """A folder's contents: nothing, or only what an export of `job` wrote at its top level (the export's
    own subfolders may hold more, e.g. the cache files `datasets` writes beside hf/'s)."""
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return None
    marker = read_marker(out)
    if marker is not None:
        if marker["job"] != job:
            raise _refuse(out, f"holds the export of another job ({marker['job']!r})", job)
        written = {str(f).split("/", 1)[0] for f in marker["files"]} | {MARKER}
        foreign = set(entries) - written
        if foreign:
            raise _refuse(out, f"holds files the last export did not write ({_names(foreign)})", job)
        return marker
    if _legacy_export(out, entries):
        return {}
    raise _refuse(out, f"holds {_names(entries)}, and is not an export (it has no {MARKER})", job)


def write_marker(folder: Path, job: str, fmt: str, version: str) -> None:
    """The marker, written last: every file of the export is listed (relative, `/`-separated)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    (folder / MARKER).write_text(json.dumps({"job": job, "format": fmt, "harvester": version, "files": files},
                                            indent=1) + "\n", encoding="utf-8")
