"""The job file: pydantic models, and loading YAML/TOML with errors that name the field."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .budgets import BUDGETS, METRICS
from .errors import ConfigError
from .export.names import ExportFormat
from .hours import Span, parse_span, parse_weekdays
from .prompts.formats import FORMATS


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a budget must not silently become "no budget".
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# In flight at most when max_concurrency is unset (also the teacher's connection pool): 2 s of latency
# at OpenAI's top tier for small models (30,000 requests/min) with headroom.
MAX_IN_FLIGHT = 2000


class Limits(_Model):
    """What the provider allows. Anything left out is learned from rate-limit headers or adaptively."""

    rpm: float | None = Field(None, gt=0, description="requests per minute")
    tpm: float | None = Field(None, gt=0, description="tokens per minute (input + output)")
    input_tpm: float | None = Field(None, gt=0, description="input tokens per minute, where split")
    output_tpm: float | None = Field(None, gt=0, description="output tokens per minute, where split")
    max_concurrency: int | None = Field(None, ge=1, le=10_000, description=(
        "requests in flight at most; unset: as many as the limits and the teacher's latency call for "
        f"(Little's law, with headroom), at most {MAX_IN_FLIGHT}"))


TrainingUse = Literal["allowed", "conditional", "forbidden", "unknown"]


class Terms(_Model):
    """What the teacher's terms say about training on its outputs (information, not legal advice)."""

    provider: str | None = None
    terms_url: str | None = None
    checked_on: date | None = None
    training_use: TrainingUse | None = None
    conditions: str | None = None
    acknowledgement: str | None = None


class _SubfieldError(ValueError):
    """A validator's error about one key inside its field (`teacher.params.max_tokens`), so that the
    message names that key, not just the field."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The OpenAI sampling parameters whose type we know: a wrong one would otherwise surface as a 400 on
# every request, or as a crash where harvester reads max_tokens. Other params pass through as they are.
_PARAM_CHECKS: dict[str, tuple[Any, str]] = {
    "max_tokens": (lambda v: _is_int(v) and v > 0, "a whole number above 0"),
    "max_completion_tokens": (lambda v: _is_int(v) and v > 0, "a whole number above 0"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number, 0 or more"),
    "top_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "frequency_penalty": (_is_number, "a number"),
    "presence_penalty": (_is_number, "a number"),
    "seed": (_is_int, "a whole number"),
    "n": (_is_int, "a whole number"),
    "top_logprobs": (lambda v: _is_int(v) and v >= 0, "a whole number, 0 or more"),
    "logprobs": (lambda v: isinstance(v, bool), "true or false"),
    "stop": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
             "a text or a list of texts"),
}
# TOML has no null: these spellings of api_key_env mean "this server needs no key".
NO_KEY = ("", "none", "null")


class Teacher(_Model):
    base_url: str = "https://api.openai.com/v1"
    model: str
    api_key_env: str | None = Field("OPENAI_API_KEY", description="name of the variable holding the key; "
                                    "null (TOML: false) for none")
    params: dict[str, Any] = Field(default_factory=dict, description="sampling parameters sent as-is")
    limits: Limits = Field(default_factory=Limits)
    timeout: float = Field(120.0, gt=0, description="seconds before one request is abandoned")
    provider: str | None = Field(None, description="e.g. openai, anthropic; guessed from base_url")
    mode: Literal["sync", "batch"] = Field("sync", description="batch: through the provider's batch API, at its "
                                           "batch price, answers within its window (24 h)")
    terms: Terms | None = None
    response_schema: str | None = Field(None, description="every answer's shape: a JSON Schema file (relative to "
                                        "the job file) or a Pydantic model as module:Class; sent as the "
                                        "provider takes it, and every answer validated")
    _job_file: str | None = PrivateAttr(None)   # named in the error about a missing key

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, v: str) -> str:
        url = urlparse(v.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            example = v.strip() if "://" in v else f"http://{v.strip()}"
            raise ValueError(f"not a URL: {v!r}; write it with its scheme and host, e.g. {example!r}")
        return v

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _key_name(cls, v: Any) -> Any:
        if v is None or v is False or (isinstance(v, str) and v.strip().lower() in NO_KEY):
            return None
        # Never echo the value: a key pasted here instead of a variable's name must not be printed.
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key "
                             "itself; null (TOML: false) for a server that needs no key")
        return v

    @field_validator("params")
    @classmethod
    def _no_reserved_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = {"messages", "model", "stream"} & v.keys()
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by harvester, not in params")
        for key, (ok, what) in _PARAM_CHECKS.items():
            if key in v and v[key] is not None and not ok(v[key]):
                raise _SubfieldError(key, f"must be {what}, not {v[key]!r}")
        if v.get("top_logprobs") is not None and v.get("logprobs") is not True:
            raise _SubfieldError("top_logprobs", "needs logprobs: true beside it (OpenAI refuses top_logprobs alone)")
        if "response_format" in v:
            from .shape import check_schema, from_response_format  # here: config is read before the rest

            rf = v["response_format"]
            spec = rf.get("json_schema") if isinstance(rf, dict) else None
            if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema") or (
                    rf.get("type") == "json_schema" and from_response_format(rf) is None):
                raise _SubfieldError("response_format", "must be OpenAI's shape: {type: json_schema, json_schema: "
                                     "{name: ..., schema: {...}}}, {type: json_object} or {type: text}; or give "
                                     "teacher.response_schema: a JSON Schema file or a Pydantic module:Class")
            problem = check_schema(spec["schema"]) if isinstance(spec, dict) else None
            if problem:
                raise _SubfieldError("response_format", f"json_schema.schema: {problem}")
        if v.get("n", 1) != 1:
            raise _SubfieldError("n", "must be 1: ask for more answers per prompt with prompts[].samples, "
                                 "so that each answer is a job of its own, paid for and kept on its own")
        return v

    def api_key(self) -> str:
        """The key from the environment; never stored anywhere."""
        if self.api_key_env is None:
            return "no-key"  # local teachers (vLLM, Ollama, the simulator) need none
        key = os.environ.get(self.api_key_env)
        if not key:
            name = self.api_key_env
            where = f"{self._job_file}: " if self._job_file else ""
            raise ConfigError(f"{where}teacher.api_key_env: environment variable {name} is not set. Set it "
                              f"before running (export {name}=...), or, for a server that needs no key "
                              "(vLLM, Ollama, harvester sim), set teacher.api_key_env to null (YAML) or "
                              "false (TOML)")
        return key

    @property
    def max_tokens(self) -> int | None:
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return int(value) if value is not None else None


class PromptSet(_Model):
    path: Path
    samples: int = Field(1, ge=1, le=1000, description="answers wanted per prompt")
    format: Literal[("auto", *FORMATS)] = "auto"  # type: ignore[valid-type]  # the formats are stated once
    response_schema: str | None = Field(None, description="this set's answers' shape (as teacher.response_schema, "
                                        "which it replaces for this set)")


class Retry(_Model):
    max_attempts: int = Field(6, ge=1, le=100, description="tries per job per run")
    initial_wait: float = Field(0.5, ge=0, description="backoff scale: a retry waits up to initial × 2^n")
    max_wait: float = Field(60.0, ge=0)
    invalid_answers: int = Field(2, ge=0, le=20, description="asks again for an answer that does not match its "
                                 "response schema (each paid); then the job is failed with the error")
    outage_after: float | None = Field(
        300.0, gt=0, description="seconds without any answer, while many different prompts keep failing, after "
        "which the teacher counts as down: the run stops (exit 4) with those jobs still pending; null: never")


class _Rates(_Model):
    input_per_mtok: float | None = Field(None, ge=0, description="fresh input, USD per million tokens")
    output_per_mtok: float | None = Field(None, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0, description="input read from the provider's "
                                                "prompt cache; default: the provider's, else as fresh input")
    cache_write_per_mtok: float | None = Field(None, ge=0, description="input written to the prompt cache "
                                               "(Anthropic); default: the provider's, else as fresh input")


def _spans(v: list[str], weekdays: list[str] | None) -> tuple[Span, ...]:
    days = parse_weekdays(weekdays)
    return tuple(parse_span(text, days) for text in v)


def _check_hours(v: list[str] | None) -> list[str] | None:
    for text in v or []:
        parse_span(text)          # raises with the form it wants
    return v


def _check_weekdays(v: list[str] | None) -> list[str] | None:
    parse_weekdays(v)
    return v


class PriceWindow(_Rates):
    """Hours with rates of their own (UTC); a rate left out is the standard one."""

    hours_utc: list[str] = Field(min_length=1, description='e.g. ["01:00-04:00", "06:00-10:00"]; may cross midnight')
    weekdays: list[str] | None = Field(None, description="e.g. [mon, tue, wed, thu, fri]; default: every day")
    label: str = Field("window", description='how the hours are called in reports, e.g. "peak"')

    _hours = field_validator("hours_utc")(_check_hours)
    _weekdays = field_validator("weekdays")(_check_weekdays)

    def spans(self) -> tuple[Span, ...]:
        return _spans(self.hours_utc, self.weekdays)


class Prices(_Rates):
    """Overrides the built-in price of the model (harvester.providers), rate by rate; without one,
    input_per_mtok and output_per_mtok are needed."""

    batch_factor: float | None = Field(None, gt=0, le=1, description="the share of these prices a batch pays "
                                       "(e.g. 0.5); default: the provider's, else 1")
    windows: list[PriceWindow] | None = Field(None, description="hours with rates of their own; replaces the "
                                              "built-in ones ([]: none)")


class Schedule(_Model):
    """When a run may send: `hours_utc` (and `weekdays`), or `off_peak` (the cheapest hours of the
    model's price). Outside them a run waits (or, with --no-wait, exits); in flight requests finish."""

    hours_utc: list[str] | None = Field(None, description='e.g. ["16:30-00:30"] (UTC; may cross midnight)')
    weekdays: list[str] | None = Field(None, description="e.g. [sat, sun]; default: every day")
    off_peak: bool = Field(False, description="the hours at the lowest rates of the model's price")
    _hours = field_validator("hours_utc")(_check_hours)
    _weekdays = field_validator("weekdays")(_check_weekdays)

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if self.off_peak and (self.hours_utc or self.weekdays):
            raise ValueError("give either off_peak: true or hours_utc (and weekdays), not both")
        if not self.off_peak and not self.hours_utc and not self.weekdays:
            raise ValueError('give hours_utc (e.g. ["16:30-00:30"]), weekdays, or off_peak: true')
        return self

    def spans(self) -> tuple[Span, ...]:
        return _spans(self.hours_utc or ["00:00-00:00"], self.weekdays)


class BatchSettings(_Model):
    """Batch mode (`teacher.mode: batch`): how jobs are packed into provider batches and watched."""

    protocol: Literal["auto", "openai", "anthropic"] = Field(
        "auto", description="auto: Anthropic's Message Batches for api.anthropic.com, else OpenAI's Files + Batch API")
    max_requests: int | None = Field(None, ge=1, description="lines per batch; default: the provider's limit")
    max_open: int = Field(4, ge=1, le=1000, description="batches open at the provider at once")
    poll_seconds: float = Field(30.0, gt=0, description="seconds between looks at the open batches")
    deadline: float | None = Field(None, gt=0, description="how long a batch may take (seconds, or e.g. '6h', "
                                   "'90m'): then it is cancelled, its answers kept, and the rest answered "
                                   "synchronously at the synchronous price; default: the provider's window")

    @field_validator("deadline", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", v)
            if m is None:
                raise ValueError(f"not a duration: {v!r}; write seconds, or a number with s, m, h or d (e.g. '6h')")
            return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]
        return v


class _Quota(_Model):
    """Budgets: any subset. `*_per_run`, `*_per_day`, `*_per_month` (UTC) and `*_total` for the job."""

    prices: Prices | None = None

    def budgets(self) -> dict[str, float]:
        """The budgets that are set, by name."""
        return {k: v for k, v in self.model_dump(exclude={"prices"}).items() if v is not None}


# One optional field per metric × window (harvester.budgets), a limit of 0 or more, in the lists' order:
# generated rather than typed out, so that a new metric or window is one word in one list. Type
# checkers see the base (budgets are read by name through `budgets()`, never as attributes).
if TYPE_CHECKING:
    Quota = _Quota
else:
    Quota = create_model("Quota", __base__=_Quota, __module__=__name__, __doc__=_Quota.__doc__,
                         **{name: (METRICS[metric] | None, Field(None, ge=0)) for name, (metric, _) in BUDGETS.items()})


class Filters(_Model):
    """Quality filters (harvester.export.filters); each one can be switched off or tuned."""

    enabled: bool = Field(True, description="false: keep every answered row")
    truncated: bool = Field(True, description='drop answers cut by max_tokens (finish_reason "length")')
    empty: bool = True
    min_tokens: int | None = Field(1, ge=0, description="drop answers shorter than this (None: off)")
    max_tokens: int | None = Field(16384, ge=1, description="drop answers longer than this (None: off)")
    refusal: bool = Field(True, description="drop refusals and model boilerplate (whole-phrase matches)")
    refusal_phrases: list[str] | None = Field(None, description="replaces the built-in phrase list")
    extra_refusal_phrases: list[str] = Field(default_factory=list, description="extends it")
    placeholder: bool = Field(True, description='drop placeholder answers such as "<noinput>"')
    list_numbering: bool = Field(True, description="drop answers with leaked list numbering")
    repetition: bool = Field(True, description="drop degenerate repetition")
    max_repeated_share: float = Field(0.5, gt=0, le=1, description="share of repeated word 3-grams")
    prompt_echo: bool = Field(True, description="drop answers that mostly echo the prompt")


class Dedup(_Model):
    exact: bool = Field(True, description="drop rows equal after folding case, spacing and punctuation")
    near: bool = Field(True, description="drop near-duplicates (MinHash LSH, every pair verified)")
    threshold: float = Field(0.7, gt=0, le=1, description="word 5-gram Jaccard at which rows are near-duplicates")
    on: Literal["answer", "prompt+answer"] = Field("answer", description="what near-dup compares")


class Decontaminate(_Model):
    evals: dict[str, Path] = Field(default_factory=dict, description="eval set name → JSONL or Parquet file")
    ngram: int = Field(13, ge=3, le=100, description="tokens in a shared n-gram that marks a row contaminated")

    @field_validator("evals", mode="before")
    @classmethod
    def _list_to_names(cls, v: Any) -> Any:
        if isinstance(v, list):  # a plain list of files: each named by its file name
            return {Path(str(p)).stem: p for p in v}
        return v


# export.keep: the columns that join rows back to their prompts, and those kept by default (and by `keep: true`)
KeepColumn = Literal["id", "metadata", "job_id"]
DEFAULT_KEEP: tuple[KeepColumn, ...] = ("id", "metadata")


class Export(_Model):
    out: Path | None = Field(None, description="folder; default data/<name>")
    format: ExportFormat = "openai"   # the names' one list: harvester.export.names
    samples: Literal["all", "first"] = Field("all", description="all samples, or one per prompt")
    test_size: float = Field(0.0, ge=0, lt=1, description="share of rows in the test split")
    shard_rows: int = Field(100_000, ge=1, description="rows per Parquet shard")
    reasoning: Literal["think", "drop"] = Field(
        "think", description="a teacher's reasoning trace: before the answer in <think> tags, or dropped")
    workers: int | None = Field(None, ge=1, le=64, description="processes for the first pass; default: one per "
                                                               "CPU for 20,000 rows or more, else 1")
    keep: list[KeepColumn] = Field(
        default_factory=lambda: list(DEFAULT_KEEP),
        description="columns that join rows back to their prompts: the prompt's id, its metadata (JSON text), "
                    "harvester's job id; true: id and metadata; false: none. Not in `openai` JSONL rows")
    filters: Filters = Field(default_factory=Filters)
    dedup: Dedup = Field(default_factory=Dedup)
    decontaminate: Decontaminate = Field(default_factory=Decontaminate)

    @field_validator("keep", mode="before")
    @classmethod
    def _keep_switch(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return list(DEFAULT_KEEP) if v else []
        return list(dict.fromkeys(v)) if isinstance(v, list) else v   # once each, in the order given

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup_switch(cls, v: Any) -> Any:
        if isinstance(v, bool):  # `dedup: false` turns both kinds off
            return {"exact": v, "near": v}
        return v


class Job(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    teacher: Teacher
    prompts: list[PromptSet] = Field(min_length=1)
    store: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///data/<name>.db")
    export: Export = Field(default_factory=Export)
    retry: Retry = Field(default_factory=Retry)
    quota: Quota = Field(default_factory=Quota)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    schedule: Schedule | None = None
    cache_order: bool = Field(True, description="send jobs whose first message is the same (a shared system "
                              "prompt or few-shot block) one after another, so that the provider's prompt cache "
                              "serves it; false: plan order")
    lease_seconds: float = Field(600.0, gt=0, description="a claimed job returns to the queue after this")
    _base: Path | None = PrivateAttr(None)      # the job file's folder: where response schemas are found

    @model_validator(mode="after")
    def _defaults(self) -> Job:
        if self.store is None:
            self.store = f"sqlite:///data/{self.name}.db"
        if self.export.out is None:
            self.export.out = Path("data") / self.name
        return self

    def resolve_paths(self, base: Path) -> Job:
        """Make every relative path absolute against `base` (the job file's folder)."""
        base = base.resolve()
        self._base = base
        for ps in self.prompts:
            ps.path = (base / ps.path).resolve()
        assert self.export.out is not None and self.store is not None
        self.export.out = (base / self.export.out).resolve()
        evals = self.export.decontaminate.evals
        for name, path in evals.items():
            evals[name] = (base / path).resolve()
        self.store = resolve_sqlite_url(self.store, base)
        return self


def resolve_sqlite_url(url: str, base: Path) -> str:
    """`sqlite:///rel.db` is relative to `base`; `sqlite:////abs.db` and other engines pass through."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix):]).resolve())
    return url


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the mapping at `loc` in a job file (list indexes skipped), if any."""
    model: type[BaseModel] = Job
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _submodel(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_submodel, get_args(annotation)) if m is not None), None)


def did_you_mean(word: str, choices: Any) -> str:
    """ "; did you mean `x`?" for a close match among `choices`, else ""."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _message(e: Any) -> tuple[tuple[Any, ...], str]:
    loc, msg = tuple(e["loc"]), str(e["msg"])
    cause = (e.get("ctx") or {}).get("error")
    if isinstance(cause, _SubfieldError):
        return (*loc, cause.key), str(cause)
    if e["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
        model = _model_at(loc[:-1])
        if model is Teacher and loc[-1] in {*_PARAM_CHECKS, "reasoning_effort", "response_format"}:
            msg = f"unknown key; sampling parameters go under teacher.params ({{{loc[-1]}: ...}})"
        elif model is not None:
            msg = f"unknown key{did_you_mean(loc[-1], model.model_fields)}"
            if not msg.endswith("?"):
                msg += f" (known: {', '.join(model.model_fields)})"
    elif e["type"] == "literal_error" and isinstance(e.get("input"), str):
        msg += did_you_mean(e["input"], re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", ""))))
    return loc, msg.removeprefix("Value error, ")


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid job file"]
    for e in err.errors():
        loc, msg = _message(e)
        lines.append(f"  {_field_path(loc)}: {msg}")
    return "\n".join(lines)


def load_job(path: str | Path) -> Job:
    """Read a job file (YAML or TOML); relative paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read job file ({e.__class__.__name__})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job file is a mapping with at least name, teacher and prompts")
    return job_from_dict(data, source=str(path), base=path.parent)


def job_from_dict(data: dict[str, Any], *, source: str = "job", base: Path | None = None) -> Job:
    try:
        job = Job.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    job.teacher._job_file = source if source != "job" else None
    return job.resolve_paths(base or Path.cwd())
