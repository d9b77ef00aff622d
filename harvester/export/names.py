"""The names of the export formats, apart from their writers (harvester.export.formats, which imports
the store): the job file's `export.format` and the CLI's `--format` check names against this list
without importing more than it."""

from __future__ import annotations

from typing import Literal, get_args

ExportFormat = Literal["openai", "alpaca", "sharegpt", "trl"]

# In the order errors and help list them.
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)

__all__ = ["ExportFormat", "FORMATS"]
