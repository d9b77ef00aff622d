"""How error bodies read: the server's message in a few words, and whether it is about the prompt.

OpenAI's `{"error": {"message", "type", "code"}}`, Gemini's list of those, FastAPI's `{"detail": ...}`
(transformers serve, many proxies), or plain text.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A 4xx whose words say the prompt itself is at fault (too long for the model, refused by a filter):
# never taken for a wrong job file (harvester.outage.RejectionWatch), however many prompts get it.
ABOUT_PROMPT = re.compile(r"context.length|context.window|maximum context|too many tokens|prompt is too long|"
                          r"input is too long|too long for|content.(policy|filter|management)|safety", re.I)


def body_text(body: Any) -> str:
    """An error body as lower-case text, to look for words in."""
    return (body if isinstance(body, str) else json.dumps(body, default=str)).lower()


def error_code(body: Any) -> str:
    """The `code` and `type` of an OpenAI-style error, as words."""
    err = body.get("error", body) if isinstance(body, dict) else None
    return " ".join(str(err.get(k) or "") for k in ("code", "type")) if isinstance(err, dict) else ""


def error_detail(body: Any) -> str:
    """The server's error message, short; never the whole body."""
    if isinstance(body, dict) and "error" not in body and "detail" in body:
        text = _fastapi_detail(body["detail"])
    elif isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("code") or err.get("type") or "")
        else:
            text = str(err)
    else:
        text = str(body or "")
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else (text or "no detail")


def is_about_prompt(status: int, body: Any) -> bool:
    """Whether a permanent error names the prompt (too long, filtered) rather than the request's setup."""
    return status == 413 or bool(ABOUT_PROMPT.search(f"{error_detail(body)} {error_code(body)}"))


def _fastapi_detail(detail: Any) -> str:
    """FastAPI's `detail`: a text, or its validation errors `[{loc, msg, type}, ...]` as `loc: msg; ...`."""
    if not isinstance(detail, list):
        return str(detail if detail is not None else "")
    parts = []
    for item in detail:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
            parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        else:
            parts.append(str(item))
    return "; ".join(parts)
