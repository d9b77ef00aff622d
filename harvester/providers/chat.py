"""A chat completion (OpenAI's `chat.completion` object) read into an `Answer`, or why it is no answer.

One reading for every path an answer comes by: the synchronous endpoint, and batch results, whose
lines carry the same object. Pure: the JSON is already decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# One token of an answer: (token, logprob, [(alternative, its logprob), ...]) in the teacher's order;
# packed for the store by harvester.logprobs
Token = tuple[str, float, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class Answer:
    content: str
    finish_reason: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning: str | None = None             # the reasoning trace, where the teacher returns one apart
    meta: dict[str, Any] = field(default_factory=dict)   # response id, fingerprint, reasoning tokens
    logprobs: list[Token] | None = None      # the tokens with their logprobs and top-k, when asked and sent


class Unusable(Exception):
    """A well-formed response that holds no answer: `permanent` if asking again cannot help (a
    content filter withheld it); else a fault of the server, worth a retry."""

    def __init__(self, message: str, *, kind: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.permanent = permanent


def read_completion(data: Any) -> Answer:
    """The answer in a decoded chat.completion body; raises Unusable."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        reasoning = _reasoning(message)
        finish_reason = choice.get("finish_reason")
        logprobs = read_logprobs(choice)
        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not (content is None or isinstance(content, str)) or not all(
                t is None or isinstance(t, int) for t in (prompt_tokens, completion_tokens)):
            raise TypeError("unexpected types")
    except Exception as e:  # noqa: BLE001 - any garbage body is a transient fault of the server
        raise Unusable(f"unparseable response body ({type(e).__name__})", kind="bad_body") from None
    if content is None and finish_reason == "length":
        content = ""  # max_tokens spent (often all on reasoning): paid for, and a retry would end the same;
        # kept as an answer, which the export's `truncated` filter drops
    if content is None or (not content.strip() and finish_reason == "content_filter"):
        if finish_reason == "content_filter":
            raise Unusable("the teacher's content filter withheld the answer", kind="content_filter", permanent=True)
        raise Unusable("the response has no message content", kind="bad_body")
    meta = {k: data[k] for k in ("id", "system_fingerprint") if data.get(k)}
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        meta["reasoning_tokens"] = details["reasoning_tokens"]
    meta |= cache_usage(usage)
    model = data.get("model")
    return Answer(content, finish_reason, model if isinstance(model, str) else None, prompt_tokens,
                  completion_tokens, reasoning, meta, logprobs)


def _reasoning(message: dict[str, Any]) -> str | None:
    """A reasoning trace returned beside the answer: `reasoning_content` (DeepSeek, vLLM, SGLang) or
    `reasoning` (OpenRouter, Groq, newer vLLM). Inline <think> blocks stay in the content as sent."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def cache_usage(usage: Any) -> dict[str, int]:
    """The prompt-cache counts of a usage object, as harvester keeps them (`cached_tokens`: read from
    the cache, `cache_write_tokens`: written to it; both part of prompt_tokens), whichever provider's
    names it uses: OpenAI's `prompt_tokens_details.cached_tokens` (vLLM, OpenRouter and others send the
    same), DeepSeek's `prompt_cache_hit_tokens`, Anthropic's `cache_read_input_tokens` and
    `cache_creation_input_tokens`. Counts absent or not whole numbers are left out."""
    if not isinstance(usage, dict):
        return {}
    details = usage.get("prompt_tokens_details")
    found = {"cached_tokens": (details.get("cached_tokens") if isinstance(details, dict) else None)
             or usage.get("prompt_cache_hit_tokens") or usage.get("cache_read_input_tokens"),
             "cache_write_tokens": usage.get("cache_creation_input_tokens")}
    return {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}


def read_logprobs(choice: dict[str, Any]) -> list[Token] | None:
    """The tokens of a decoded completion choice with their logprobs and top alternatives; None when the
    choice carries none. Raises ValueError on a logprobs object that is not OpenAI's shape."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if content is None:
        return None
    if not isinstance(content, list):
        raise ValueError("logprobs.content is not a list")
    out: list[Token] = []
    for item in content:
        tops = item.get("top_logprobs") or []
        out.append((_text(item["token"]), _number(item["logprob"]),
                    [(_text(t["token"]), _number(t["logprob"])) for t in tops]))
    return out


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a token is not a text")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a logprob is not a number")
    return float(value)
