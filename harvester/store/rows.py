"""The rows the store takes in and gives out that other layers build or read: a job to plan
(`JobSpec`, made by `prompts`) and an answered sample (`Record`, read by `export`). They live here,
in the lower layer, so that the store imports neither of the layers that use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class JobSpec:
    """One request to send: stable `id` = hash(messages, model, params, sample index)."""

    id: str
    prompt_key: str
    seq: int
    sample_index: int
    request: dict[str, Any]                       # {"model", "messages", "params"}
    source: str
    metadata: dict[str, Any]
    group_seq: int | None = None                  # the order it is sent in (harvester.cacheorder); None: seq


@dataclass(slots=True)
class Record:
    """One answered sample on its way from the store to a dataset file.

    `messages` is the request as sent (system/user turns); `answer` the assistant's reply.
    `job_id` is stable across reruns (a hash of the canonical request) and drives the split.
    """

    job_id: str
    prompt_key: str                 # hash of the messages alone: samples of one prompt share it
    seq: int                        # position in the plan: the export's deterministic order
    sample_index: int
    messages: list[dict[str, str]]
    answer: str
    finish_reason: str | None = None
    model: str | None = None        # model as the teacher reported it
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    source: str = ""                # "file:line" the prompt came from
    metadata: dict[str, Any] = field(default_factory=dict)
    reasoning: str | None = None    # the teacher's reasoning trace, apart from the answer
    shape: dict[str, Any] | None = None   # the response schema the answer was checked against (harvester.shape)
    logprobs: bytes | None = None   # its tokens' logprobs and top-k, packed (harvester.logprobs)

    @property
    def prompt_text(self) -> str:
        """The user-visible prompt: every non-assistant turn joined (system first)."""
        return "\n\n".join(m["content"] for m in self.messages if m.get("role") != "assistant")

    @property
    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return m["content"]
        return ""
