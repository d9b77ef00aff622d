"""harvester: harvest a teacher model's answers for distillation.

The public API is what `__all__` lists (a test pins it). Names are imported on first use, so that
`import harvester.sim` or `harvester --help` does not pay for the openai SDK and `datasets`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Harvester": "api", "RunResult": "api", "PlanSummary": "api",
    "Job": "config", "Teacher": "config", "Limits": "config", "PromptSet": "config", "load_job": "config",
    "HarvesterError": "errors", "ConfigError": "errors", "PromptSourceError": "errors",
    "StoreError": "errors", "TermsRefused": "errors", "QuotaExceeded": "errors", "Interrupted": "errors",
    "TeacherError": "errors", "RetryableError": "errors", "PermanentError": "errors", "FatalError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harvester' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
