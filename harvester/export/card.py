"""The dataset card: `README.md` with Hub-style YAML metadata and the dataset's provenance."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from ..results import Provenance
from ..units import usd_text


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def _date(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def public_model(name: str) -> str:
    """A model as the card names it: one served from a folder (vLLM reports `/home/u/models/Qwen2.5-7B`
    unless given --served-model-name) by the folder's name, never the local path."""
    if name.startswith(("/", "~", "./", "../")) or PureWindowsPath(name).drive:
        path = PureWindowsPath(name) if PureWindowsPath(name).drive else PurePosixPath(name)
        return path.name or name.strip("/\\")
    return name


def public_provenance(provenance: Provenance) -> Provenance:
    """Provenance as a dataset folder may carry it (`stats.json`, the card): models served from a folder
    named by the folder, never by the local path."""
    return {**provenance, "models_reported": sorted({public_model(m) for m in provenance["models_reported"]})}


def _private_host(host: str) -> bool:
    """This machine, a private network, or a name only a local network resolves."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith((".local", ".lan", ".internal", ".home",
                                                                       ".localdomain", ".corp", ".intranet"))
    return ip.is_private or ip.is_loopback or ip.is_link_local


def public_url(url: str) -> str:
    """The base URL without user info or query: nothing secret goes into a card. A server on this machine
    or a private network is named as such, not by its host name or address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or _private_host(host):
        return "a self-hosted server (private address)"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# What each format trains on, for the card (the prompt's own assistant turns vs the teacher's answer)
TRAINS_ON = {
    "openai": "OpenAI fine-tuning trains on the teacher's answer only: assistant turns written in the prompt "
              "file carry `weight: 0` in the JSONL files. TRL (`assistant_only_loss`) and LLaMA-Factory train "
              "on every assistant turn, those included (LLaMA-Factory: set `mask_history: true` in the "
              "training arguments to train on the last turn only).",
    "alpaca": "LLaMA-Factory trains on every turn of `history` as well as on `output`, the teacher's answer; "
              "set `mask_history: true` in its training arguments to train on the last turn only.",
    "sharegpt": "LLaMA-Factory trains on every `gpt` turn, those written in the prompt file included; set "
                "`mask_history: true` in its training arguments to train on the last turn only.",
    "trl": "TRL trains on `completion`, the teacher's answer, only; earlier turns are part of `prompt`.",
}


def _code_or_words(text: str) -> str:
    return f"`{text}`" if "://" in text else text


def _channel_lines(provenance: dict[str, Any], cost: dict[str, Any] | None) -> list[str]:
    """How many answers came through provider batches, and what they cost against the synchronous price."""
    channels = provenance.get("channels") or {}
    batch, sync = channels.get("batch") or {}, channels.get("sync") or {}
    if not batch.get("answers"):
        return []
    total = batch["answers"] + (sync.get("answers") or 0)
    line = (f"- through provider batches: {batch['answers']:,} of {total:,} answers "
            f"({batch['prompt_tokens']:,} prompt + {batch['completion_tokens']:,} completion tokens)")
    if cost and "usd" in batch:
        line += (f"; {usd_text(batch['usd'])} at the batch price ({cost['batch_factor']:g} of the synchronous one) "
                 f"against {usd_text(batch['usd_at_sync_price'])} synchronously, "
                 f"{usd_text(batch['usd_at_sync_price'] - batch['usd'])} saved")
    lines = [line]
    if sync.get("answers"):
        lines.append(f"- synchronous: {sync['answers']:,} answers"
                     + (f", {usd_text(sync['usd'])}" if cost and "usd" in sync else ""))
    return lines


def _shape_lines(report: dict[str, Any], teacher: dict[str, Any]) -> list[str]:
    """The response schemas every answer was checked against, and the logprobs column's teacher and tokenizer."""
    lines = []
    if report.get("schemas"):
        lines += ["", "## Answers with a shape", "",
                  "Every answer was validated against its response schema: "
                  + ", ".join(f"`{s}`" for s in report["schemas"])
                  + ". The assistant's content is the teacher's JSON text as sent; Parquet and `hf/` also hold the "
                  "parsed object in the `parsed` column. Answers that did not parse, did not validate or were cut "
                  "off were asked again (retry.invalid_answers), then recorded as failed: none is in this dataset."]
    if report.get("logprobs_asked"):
        k = (teacher.get("params") or {}).get("top_logprobs") or 0
        lines += ["", "## Token probabilities", "",
                  f"Parquet and `hf/` hold a `logprobs` column: per answer token, `token`, `logprob` and `top`, the "
                  f"teacher's top-{k} alternatives with theirs, as `{public_model(teacher['model'])}` sent them; "
                  f"tokenizer: {report.get('tokenizer') or 'not known to harvester'}. "
                  f"{report.get('logprobs_rows', 0):,} rows carry them"
                  + (f"; {report['without_logprobs']:,} rows came without (null)." if report.get("without_logprobs")
                     else ".")]
    return lines


def render_card(*, name: str, teacher: dict[str, Any], report: dict[str, Any], version: str) -> str:
    """The card, from the export's report alone (its `provenance` is what `stats.json` holds too)."""
    provenance = report.get("provenance") or {}
    cost = provenance.get("cost")
    rows = report["rows"]
    total = sum(rows.values())
    meta = {
        "pretty_name": name,
        "tags": ["distillation", "synthetic", "harvester", f"format:{report['format']}"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(total)],
        "configs": [{"config_name": "default", "data_files": [
            {"split": split, "path": f"parquet/{split}-*.parquet"} for split in sorted(rows)]}],
    }
    terms = provenance.get("terms") or {}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {name}", "",
        f"Answers of a teacher model, harvested and cleaned by harvester {version} for distillation "
        f"(format: `{report['format']}`).", "",
        "## Teacher", "",
        f"- model requested: `{public_model(teacher['model'])}`; as reported: "
        + (", ".join(f"`{public_model(m)}`" for m in provenance.get("models_reported") or []) or "-"),
        f"- endpoint: {_code_or_words(public_url(teacher['base_url']))}; provider: "
        f"{terms.get('provider') or 'unknown'}",
        f"- parameters: `{teacher.get('params') or {}}`",
        f"- harvested: {_date(provenance.get('first_answer'))} to {_date(provenance.get('last_answer'))} "
        f"in {provenance.get('runs', 0)} run(s); exported {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Terms of use of the teacher's outputs", "",
        f"- training use: **{terms.get('training_use', 'unknown')}**"
        + (f" (source: {terms['terms_url']}, read {terms.get('checked_on')})" if terms.get("terms_url") else ""),
    ]
    if terms.get("conditions"):
        lines.append(f"- conditions: {terms['conditions']}")
    if terms.get("acknowledgement"):
        lines.append(f"- acknowledged by: {terms['acknowledgement']}")
    lines += ["- this record is information, not legal advice", "",
              "## Rows", "", "| split | rows |", "|---|---:|"]
    lines += [f"| {split} | {n:,} |" for split, n in sorted(rows.items())]
    lines += ["", "## What the export kept and dropped", "", "| step | kept | dropped |", "|---|---:|---:|",
              f"| answered rows selected | {report['selected']:,} | |"]
    lines += [f"| {s['step']} | {s['kept']:,} | {s['dropped']:,} |" for s in report["steps"]]
    if report["dropped"]:
        lines += ["", "Drops by reason (each dropped row is in `rejected.jsonl` with its reason):", ""]
        lines += [f"- {reason}: {n:,}" for reason, n in sorted(report["dropped"].items())]
    if report.get("near_dup_clusters"):
        lines += ["", f"Near-duplicate clusters: {report['near_dup_clusters']:,} (one representative kept "
                  f"in each, the earliest in plan order; every removal verified by exact Jaccard)."]
    if report.get("reasoning_rows"):
        how = ("before each answer in `<think>` tags" if report.get("reasoning") == "think"
               else "not written (export.reasoning: drop)")
        lines += ["", f"Reasoning traces: {report['reasoning_rows']:,} rows came with the teacher's reasoning, "
                  f"{how}."]
    lines += _shape_lines(report, teacher)
    lines += ["", "## What a trainer trains on", "", TRAINS_ON.get(report["format"], "")]
    if report.get("multi_turn_rows"):
        lines += ["", f"Rows holding assistant turns written in the prompt file, before the teacher's answer: "
                  f"{report['multi_turn_rows']:,}."]
    if report.get("keep"):
        lines += ["", "Columns joining rows back to their prompts: " + ", ".join(f"`{k}`" for k in report["keep"])
                  + " (`metadata` as JSON text)"
                  + (" in Parquet and `hf/`, not in the JSONL files (OpenAI's fine-tuning refuses unknown keys)."
                     if report["format"] == "openai" else " in every file.")]
    for note in report.get("notes") or []:
        lines += ["", note[:1].upper() + note[1:] + "."]
    if report.get("decontamination"):
        lines += ["", "Decontamination hits per eval set: "
                  + ", ".join(f"{k}: {v:,}" for k, v in sorted(report["decontamination"].items()))]
    if report.get("plots"):   # image files of the folder, linked relatively as Hub cards show them
        lines += [""] + [f"![{p['title']}]({p['path']})" for p in report["plots"]]
    lines += ["", "## Tokens and cost", "",
              f"- exported rows: {report['prompt_tokens']:,} prompt + "
              f"{report['completion_tokens']:,} completion tokens",
              f"- whole harvest: {provenance.get('requests', 0):,} requests, {provenance.get('prompt_tokens', 0):,} "
              f"prompt + {provenance.get('completion_tokens', 0):,} completion tokens answered"]
    if cost:
        discounted = ((provenance.get("channels") or {}).get("batch") or {}).get("answers")
        lines.append(f"- cost at ${cost['input_per_mtok']}/M input and ${cost['output_per_mtok']}/M output tokens"
                     + (f" (batches at {cost['batch_factor']:g} of that)" if discounted else "")
                     + f": {usd_text(cost['usd'])}" + (f" (quota ledger: {usd_text(cost['ledger_usd'])} incl. failed "
                                                   "attempts)" if abs(cost.get("ledger_usd") or 0) > 1e-9 else ""))
    if cost and cost.get("cached_tokens"):
        lines.append(f"- prompt cache: {cost['cached_tokens']:,} input tokens cached, {usd_text(cost['usd_list'])} at "
                     f"list price, {usd_text(cost['saved_cache_usd'])} saved by caching")
    spent = (cost or {}).get("ledger")
    if spent:
        lines.append(f"- quota ledger: paid {usd_text(spent['usd'])} of {usd_text(spent['usd_list'])} at list price; "
                     f"saved by caching {usd_text(spent['saved_cache'])}, by the hour {usd_text(spent['saved_hour'])}, "
                     f"by batches {usd_text(spent['saved_batch'])}")
    lines += _channel_lines(provenance, cost)
    lines += ["", "## Files", "",
              "- `train.jsonl`" + (", `test.jsonl`" if "test" in rows else "") + ": one row per line",
              "- `parquet/`: zstd Parquet shards; `hf/`: `datasets.load_from_disk`",
              "- `dataset_info.json`: LLaMA-Factory's dataset index (where the format has one)",
              "- `rejected.jsonl`: dropped rows with their reason; `stats.json`: these figures"]
    if report.get("plots"):
        lines.append("- `plots/`: the figures above (`harvester report` draws them with the harvest's)")
    lines.append("")
    return "\n".join(lines)
