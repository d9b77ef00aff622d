"""YAML prompt files: a `template` whose `variables` expand as a product, a list of `templates`, and/or
a list of literal `prompts` (strings or rows); an optional top-level `system`. Errors name the line."""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import PromptSourceError
from .rows import Prompt, row_to_prompt
from .text import read_text


def read_yaml(path: Path) -> Iterator[Prompt]:
    return _read_yaml(read_text(path), str(path))


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping under the key `__line__`, and of each of its keys under `__keys__`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__keys__"] = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return mapping


_MARKS = ("__line__", "__keys__")


def _line_of(mapping: dict[Any, Any], *keys: Any) -> int:
    """The line of the first of `keys` present in a loaded mapping, else of the mapping itself."""
    lines = mapping.get("__keys__", {})
    line: int = next((lines[k] for k in keys if k in lines), mapping.get("__line__", 1))
    return line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k not in _MARKS}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _read_yaml(text: str, name: str) -> Iterator[Prompt]:
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise PromptSourceError(f"{name}:{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise PromptSourceError(f"{name}:1: expected a mapping with 'template', 'templates' or 'prompts'")
    known = {*_MARKS, "system", "template", "variables", "templates", "prompts", "metadata"}
    unknown = sorted(map(str, set(doc) - known))
    if unknown:
        raise PromptSourceError(f"{name}:{_line_of(doc, *unknown)}: unknown key(s) {unknown}")
    system = doc.get("system")
    if not isinstance(doc.get("templates") or [], list):
        raise PromptSourceError(f"{name}:{_line_of(doc, 'templates')}: 'templates' must be a list")
    templates = list(doc.get("templates") or [])
    if "template" in doc:
        templates.insert(0, {k: doc[k] for k in ("template", "variables", "metadata", *_MARKS) if k in doc})
    elif "variables" in doc:
        raise PromptSourceError(f"{name}:{_line_of(doc, 'variables')}: 'variables' without a 'template'")
    for t in templates:
        yield from _expand_template(t, name, system)
    prompts = doc.get("prompts") or []
    if not isinstance(prompts, list):
        raise PromptSourceError(f"{name}:{_line_of(doc, 'prompts')}: 'prompts' must be a list")
    for i, row in enumerate(prompts):
        line = row.get("__line__") if isinstance(row, dict) else None
        yield row_to_prompt(_strip_lines(row), f"{name}:{line or doc['__line__']}" if line
                            else f"{name}:prompts[{i}]", system)


def _expand_template(t: Any, name: str, system: str | None) -> Iterator[Prompt]:
    if not isinstance(t, dict) or "template" not in t:
        raise PromptSourceError(f"{name}: each entry of 'templates' needs a 'template'")
    where = f"{name}:{_line_of(t, 'template')}"  # the line of each prompt it makes, and of its errors
    unknown = sorted(map(str, set(t) - {*_MARKS, "template", "variables", "system", "metadata"}))
    if unknown:
        raise PromptSourceError(f"{name}:{_line_of(t, *unknown)}: unknown key(s) {unknown} in a template")
    template = t["template"]
    if not isinstance(template, str) or not template.strip():
        raise PromptSourceError(f"{where}: 'template' must be non-empty text")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise PromptSourceError(f"{where}: bad template ({e}); write {{{{ and }}}} for literal braces") from None
    at_variables = f"{name}:{_line_of(t, 'variables')}"
    raw_variables = t.get("variables") or {}
    variables = _strip_lines(raw_variables)
    if not isinstance(variables, dict):
        raise PromptSourceError(f"{at_variables}: 'variables' must map names to lists of values")
    for f in fields:
        if not f.isidentifier():
            raise PromptSourceError(f"{where}: template field {{{f}}} must be a plain name")
        if f not in variables:
            raise PromptSourceError(f"{where}: template variable {{{f}}} has no values")
    names = list(dict.fromkeys(fields))
    unused = set(variables) - set(names)
    if unused:
        raise PromptSourceError(f"{at_variables}: variable(s) {sorted(map(str, unused))} are not used in the template")
    values: list[list[str]] = []
    for n in names:
        v = variables[n]
        v = v if isinstance(v, list) else [v]
        if not v or any(isinstance(x, (dict, list)) or x is None for x in v):
            raise PromptSourceError(f"{name}:{_line_of(raw_variables, n)}: variable {n!r} needs a non-empty list "
                                    "of plain values")
        values.append([str(x) for x in v])
    metadata = _strip_lines(t.get("metadata") or {})
    if not isinstance(metadata, dict):
        raise PromptSourceError(f"{name}:{_line_of(t, 'metadata')}: 'metadata' must be an object")
    for combo in itertools.product(*values):
        bound = dict(zip(names, combo))
        try:  # a format spec may name another field ({a:>{w}}) or not suit text ({a:d})
            text = template.format(**bound)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            raise PromptSourceError(f"{where}: bad template ({type(e).__name__}: {e})") from None
        yield row_to_prompt({"prompt": text, "metadata": {**metadata, "vars": bound},
                             **({"system": t["system"]} if "system" in t else {})}, where, system)
