"""Prompt sets → job specs with stable ids. Every error names the file and the line.

- `rows`: a row (prompt / messages / instruction / conversations, Dolly's names) → a `Prompt`.
- `text`: JSONL (one row a line), JSON (an array of rows, Alpaca's `alpaca_data.json`), CSV.
- `templates`: YAML: `template` + `variables` (lists expand as a product), a list of `templates`,
  and/or a list of literal `prompts` (strings or rows); an optional top-level `system`.
- `tables`: Parquet and a local HF dataset (a `save_to_disk` folder), read in batches.
- `formats`: the one registry of formats (name → reader, suffixes), which `config` validates against.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import PromptSourceError
from ..hashing import content_hash
from .formats import FORMATS, detect
from .rows import Prompt

if TYPE_CHECKING:
    from ..config import Job, PromptSet
    from ..store.rows import JobSpec

__all__ = ["Prompt", "plan", "read_prompt_set"]


def plan(job: Job, counts: list[int] | None = None) -> Iterator[JobSpec]:
    """Every job spec of a job file, in a deterministic order (file order × samples). `counts`, if
    given (one per prompt set), counts the prompts read from each set, for the plan's description."""
    # imported on use: `config` imports this package (its format registry), and reading a job file
    # should not pay for the store's SQLAlchemy
    from ..shape import shaped_request
    from ..shape_load import check_logprobs, shapes_for, structured_output
    from ..store.rows import JobSpec

    check_logprobs(job)
    shapes, mode = shapes_for(job), structured_output(job)
    seq = 0
    for index, prompt_set in enumerate(job.prompts):
        shape = shapes[index]
        for prompt in read_prompt_set(prompt_set):
            if counts is not None:
                counts[index] += 1
            messages, params = prompt.messages, job.teacher.params
            if shape is not None:   # the schema is part of the request, and of the job's id
                messages, params = shaped_request(messages, params, shape, mode)
            prompt_key = content_hash(prompt.messages)
            for sample in range(prompt_set.samples):
                request: dict[str, Any] = {"model": job.teacher.model, "messages": messages, "params": params}
                # hashed before the shape joins it: the schema is in what is sent (params or messages), and a
                # job file whose response_format was sent before it was enforced keeps its job ids
                job_id = content_hash({**request, "sample": sample})
                if shape is not None:
                    request["shape"] = shape.stored()
                yield JobSpec(job_id, prompt_key, seq, sample, request, prompt.source, prompt.metadata)
                seq += 1


def read_prompt_set(prompt_set: PromptSet) -> Iterator[Prompt]:
    path = prompt_set.path
    fmt = detect(path) if prompt_set.format == "auto" else FORMATS[prompt_set.format]
    prompts = fmt.read(path)
    count = 0
    try:
        for prompt in prompts:
            count += 1
            yield prompt
    except RecursionError:  # JSON nested thousands deep, or a YAML alias that contains itself
        raise PromptSourceError(f"{path}: nested too deeply (or a YAML alias refers to itself)") from None
    if count == 0:
        raise PromptSourceError(f"{path}: no prompts in this file")
