"""A response schema named in a job file, loaded: a JSON Schema file, or a Pydantic model (`module:Class`).

The edge of harvester.shape: it reads files and imports modules. Every error names the field and the fix.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import providers
from .errors import ConfigError
from .logprobs import wanted
from .providers.base import StructuredOutput
from .shape import ModelCheck, Shape, check_schema, from_response_format, schema_name

if TYPE_CHECKING:
    from .config import Job

_MODEL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_shape(spec: str, base: Path, field: str) -> Shape:
    """The shape `spec` names: a `.json` file (relative to `base`, the job file's folder), or
    `module:Class`, a Pydantic model importable from `base` or the Python path."""
    path = base / spec
    if _MODEL.match(spec) and not path.exists():
        return _from_model(spec, base, field)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{field}: no such file {path}; give a JSON Schema file (relative to the job file) or a "
                          "Pydantic model as module:Class") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{field}: cannot read {path} ({type(e).__name__})") from None
    except ValueError as e:
        raise ConfigError(f"{field}: {path} is not JSON ({e}); a response schema file is a JSON Schema") from None
    problem = check_schema(schema)
    if problem:
        raise ConfigError(f"{field}: {path}: {problem}")
    return Shape(schema_name(str(schema.get("title") or path.stem)), schema, path.name)


def _from_model(spec: str, base: Path, field: str) -> Shape:
    schema_of = getattr(_model(spec, base, field), "model_json_schema", None)
    if not callable(schema_of):
        raise ConfigError(f"{field}: {spec} is not a Pydantic model (no model_json_schema())")
    schema = schema_of()
    problem = check_schema(schema)
    if problem:
        raise ConfigError(f"{field}: {spec}: {problem}")
    return Shape(schema_name(spec.partition(":")[2].split(".")[-1]), schema, spec)


def _model(spec: str, base: Path, field: str) -> Any:
    """The object `module:Class` names, imported from `base` (the job file's folder) or the Python path."""
    module_name, _, attr = spec.partition(":")
    added = str(base) not in sys.path
    if added:   # a model beside the job file imports as it would from there
        sys.path.insert(0, str(base))
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise ConfigError(f"{field}: cannot import {module_name} ({e}); put the module beside the job file or on "
                          "the Python path, or give a JSON Schema file") from None
    except AttributeError:
        raise ConfigError(f"{field}: {module_name} has no {attr}") from None
    finally:
        if added:
            sys.path.remove(str(base))
    return obj


def model_checks(job: Job) -> dict[str, ModelCheck]:
    """The job's Pydantic response models' own validation (model_validate_json), by their `module:Class`:
    what a JSON Schema cannot say (a validator's rule) is checked on every answer too."""
    base = job._base or Path.cwd()
    specs = {s for s in [job.teacher.response_schema, *(ps.response_schema for ps in job.prompts)] if s}
    checks: dict[str, ModelCheck] = {}
    for spec in specs:
        if not _MODEL.match(spec) or (base / spec).exists():
            continue
        validate = _model(spec, base, "response_schema").model_validate_json

        def check(text: str, validate: Any = validate) -> str | None:
            try:
                validate(text)
            except ValueError as e:   # pydantic's ValidationError is a ValueError
                return " ".join(str(e).split())[:300]
            return None
        checks[spec] = check
    return checks


def shapes_for(job: Job) -> list[Shape | None]:
    """Each prompt set's response schema: its own `response_schema`, else the teacher's, else the one in
    teacher.params.response_format (OpenAI's shape, sent as-is where the provider takes json_schema)."""
    base = job._base or Path.cwd()
    from_params = from_response_format(job.teacher.params.get("response_format"))
    if job.teacher.response_schema and from_params is not None:
        raise ConfigError("teacher.response_schema and teacher.params.response_format both give a response schema: "
                          "keep one")
    default = load_shape(job.teacher.response_schema, base, "teacher.response_schema") \
        if job.teacher.response_schema else from_params
    return [load_shape(ps.response_schema, base, f"prompts[{i}].response_schema") if ps.response_schema else default
            for i, ps in enumerate(job.prompts)]


def structured_output(job: Job) -> StructuredOutput:
    """How the job's teacher takes a response schema (its provider's room; OpenAI's way when unknown)."""
    provider = providers.identify(job.teacher.provider, job.teacher.base_url)
    return provider.structured_output if provider is not None else "json_schema"


def check_logprobs(job: Job) -> None:
    """A job that asks for more top_logprobs than its provider returns, or for logprobs where there are none,
    is told so before anything is spent."""
    k = wanted(job.teacher.params)
    provider = providers.identify(job.teacher.provider, job.teacher.base_url)
    if k is None or provider is None or provider.max_top_logprobs is None:
        return
    if provider.max_top_logprobs == 0:
        raise ConfigError(f"teacher.params.logprobs: {provider.name} returns no logprobs on its OpenAI-compatible "
                          "API; remove logprobs and top_logprobs")
    if k > provider.max_top_logprobs:
        raise ConfigError(f"teacher.params.top_logprobs: {provider.name} returns at most {provider.max_top_logprobs} "
                          f"alternatives per token, not {k}; lower it")
