"""The simulator's answers with a shape: JSON for a requested schema (with a share of invalid ones), and
token logprobs when asked. Kept apart from harvester.sim, which calls `shape_answer` on every answer.

A schema is read the way a model would get it: from `response_format` json_schema, or, under json_object
or no JSON mode, from the JSON Schema written in the system prompt (harvester.shape.instruction). Everything
is a deterministic function of the messages and the answer's place in their series, like the text answers.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sim import Answer, SimConfig

MAX_TOP_LOGPROBS = 20          # as OpenAI's chat completions
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")    # the simulator's tokens, each with the spaces before it
_ALTERNATIVES = (" the", " a", " of", ",", ".", " and", " is", " model", " data", "\n", " é", "—", " 数据", '"', ":")


def requested_schema(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON Schema a request asks its answer to follow, if any."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    for m in messages:
        if m.get("role") == "system":
            text = str(m.get("content", ""))
            at = text.rfind("JSON Schema:\n")
            if at >= 0:
                try:
                    found = json.loads(text[at + len("JSON Schema:\n"):])
                except ValueError:
                    continue
                if isinstance(found, dict):
                    return found
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return {"type": "object"}
    return None


def shape_answer(cfg: SimConfig, body: dict[str, Any] | None, messages: list[dict[str, Any]], key: str, nth: int,
                 answer: Answer, max_tokens: int | None) -> Answer:
    """`answer` reshaped for what the request asks: JSON of its schema, then logprobs if wanted."""
    from .sim import count_tokens

    if body is None:
        return answer
    schema = requested_schema(body, messages)
    if schema is not None and answer.text:
        rng = random.Random(f"json:{key}:{nth}:{cfg.seed}")
        obj = example(schema, schema, rng)
        pick = random.Random(f"shape:{key}:{nth}:{cfg.seed}").random()
        finish = "stop"
        if pick < cfg.invalid_json_rate:              # prose around the object, as models do
            text = f"Sure! Here is the JSON you asked for:\n{json.dumps(obj)}"
        elif pick < cfg.invalid_json_rate + cfg.missing_field_rate and isinstance(obj, dict) and schema.get("required"):
            obj = {k: v for k, v in obj.items() if k != schema["required"][0]}
            text = json.dumps(obj)
        else:
            text = json.dumps(obj, ensure_ascii=False)
        if pick >= cfg.invalid_json_rate + cfg.missing_field_rate and \
                pick < cfg.invalid_json_rate + cfg.missing_field_rate + cfg.truncated_json_rate:
            text, finish = text[:max(1, len(text) // 2)], "length"   # max_tokens ran out mid-object
        if max_tokens is not None and count_tokens(text) > max_tokens:
            text, finish = "".join(_PIECE.findall(text)[:max_tokens]), "length"
        answer = dataclasses.replace(answer, text=text, completion_tokens=count_tokens(text), finish=finish)
    if cfg.logprobs and body.get("logprobs") is True and answer.text is not None:
        k = int(body.get("top_logprobs") or 0)
        answer = dataclasses.replace(answer, logprobs=logprobs_for(answer.text, k, f"{key}:{nth}:{cfg.seed}"))
    return answer


def example(schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A value of `schema` (the common keywords: type, properties, items, enum, $ref into $defs, anyOf)."""
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return example(target, root, rng, depth + 1)
    for many in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(many), list) and schema[many]:
            return example(schema[many][0], root, rng, depth + 1)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example(sub, root, rng, depth + 1) for name, sub in props.items()} if depth < 8 else {}
    if kind == "array":
        items = schema.get("items") or {"type": "string"}
        return [example(items, root, rng, depth + 1) for _ in range(rng.randint(1, 3))] if depth < 8 else []
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 1))), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    words = ("alpha", "river", "signal", "proof", "light", "market", "graph", "cell")
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))


def logprobs_for(text: str, k: int, seed: str) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content` for `text`: each token with its logprob, bytes and `k` top alternatives
    (the sampled token first), the floats float32 values as float32 servers send them."""
    rng = random.Random(f"logprobs:{seed}")
    out = []
    for token in _PIECE.findall(text):
        chosen = _f32(-rng.expovariate(4.0))
        top = [{"token": token, "logprob": chosen, "bytes": list(token.encode())}] if k else []
        level = chosen
        for alt in rng.sample(_ALTERNATIVES, min(max(0, k - 1), len(_ALTERNATIVES))) + \
                [f" w{i}" for i in range(max(0, k - 1 - len(_ALTERNATIVES)))]:
            level = _f32(level - rng.expovariate(1.0))
            top.append({"token": alt, "logprob": level, "bytes": list(alt.encode())})
        out.append({"token": token, "logprob": chosen, "bytes": list(token.encode()), "top_logprobs": top})
    return out


def _f32(x: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", x))[0]
    return result
