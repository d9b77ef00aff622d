"""The report page: one self-contained HTML file (inline CSS, inline SVG charts, no script, no link out),
and the one place that writes it, only over a report it wrote before."""

from __future__ import annotations

import html
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__, reasons
from ..errors import ConfigError
from ..units import count_text, usd_text

GENERATOR = "harvester report"     # the meta tag that marks a file this command wrote (and may rewrite)
_MARK = f'<meta name="generator" content="{GENERATOR}">'

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;
color:#222;background:#fff}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 12px}
.numbers{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:12px 0}
.numbers div{background:#f5f7fa;border-radius:6px;padding:8px 10px}
.numbers b{display:block;font-size:20px}.numbers span{color:#555;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:6px}figure svg{width:100%;height:auto}
table{border-collapse:collapse;margin:6px 0;font-size:13px}td,th{border-bottom:1px solid #eee;padding:3px 10px;
text-align:left;vertical-align:top}th{background:#f5f7fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#777;font-style:italic}.warn{color:#b00020}blockquote{margin:2px 0;color:#444;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _number(key: str, label: str, value: Any, text: str) -> str:
    raw = "" if value is None else value
    return f'<div><b id="n-{key}" data-value="{_e(raw)}">{_e(text)}</b><span>{_e(label)}</span></div>'


def _table(head: list[str], rows: list[list[Any]], numeric: frozenset[int] = frozenset()) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{_e(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _charts(svgs: dict[str, str | None], absent: dict[str, str]) -> str:
    drawn = "".join(f'<figure data-chart="{_e(k)}">{v}</figure>' for k, v in svgs.items() if v)
    missing = [absent[k] for k, v in svgs.items() if not v and k in absent]
    notes = "".join(f'<p class="none">{_e(m)}</p>' for m in missing)
    return f'<div class="charts">{drawn}</div>{notes}'


ABSENT = {"rate": "No requests yet.", "errors": "No 429s, errors or retries.",
          "latency": "No attempts yet: no latency.", "tokens": "No answers yet: no tokens.",
          "budgets": "No budgets and no spend recorded (no prices known, or no budget set).",
          "batches": "No provider batches (a synchronous harvest).",
          "lengths": "No rows written: no lengths.", "decontamination": "No decontamination hits (or no eval sets)."}


def render(d: dict[str, Any], run_svgs: dict[str, str | None], export_svgs: dict[str, str | None],
           refresh: float | None = None) -> str:
    """The page. `refresh`: seconds between reloads (watch mode only; a finished report stays still)."""
    n, t, terms = d["headline"], d["teacher"], d["terms"] or {}
    refresh_tag = f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">' if refresh else ""
    numbers = "".join([
        _number("answers", f"answers of {count_text(n['jobs'])} jobs", n["answers"], count_text(n["answers"])),
        _number("failed", "jobs failed", n["failed"], count_text(n["failed"])),
        _number("requests", "requests sent (attempts)", n["requests"], count_text(n["requests"])),
        _number("rate_limited", "429s received", n["rate_limited"], count_text(n["rate_limited"])),
        _number("prompt_tokens", "tokens in", n["prompt_tokens"], count_text(n["prompt_tokens"])),
        _number("completion_tokens", "tokens out", n["completion_tokens"], count_text(n["completion_tokens"])),
        _number("spend", "spent (quota ledger)", n["spend_usd"], usd_text(n["spend_usd"])),
        _number("rows_kept", "rows kept by the export", n["rows_kept"],
                "-" if n["rows_kept"] is None else count_text(n["rows_kept"])),
    ])
    runs = _table(["run", "worker", "started", "ended", "exit reason", "sent", "answered", "429s"],
                  [[r["id"], r["owner"], _when(r["started_at"]), _when(r["ended_at"]),
                    _reason(r["exit_reason"]), r["sent"], r["answered"], r["rate_limited"]] for r in d["runs"]],
                  numeric=frozenset({5, 6, 7}))
    teacher = _table(["", ""], [
        ["model", t["model"]], ["endpoint", t["base_url"]], ["mode", t["mode"]], ["parameters", t["params"]],
        ["provider", terms.get("provider") or "unknown"],
        ["training use of outputs", (terms.get("training_use") or "unknown")
         + (f" (source: {terms['terms_url']}, read {terms.get('checked_on')})" if terms.get("terms_url") else "")],
        ["conditions", terms.get("conditions") or "-"], ["acknowledged by", terms.get("acknowledgement") or "-"]])
    budgets = d["quota"]["budgets"]
    quota = _table(["budget", "used", "reserved", "limit", "left", "resets"],
                   [[b["name"], f"{b['used']:,.6g}", f"{b['reserved']:,.6g}", f"{b['limit']:,g}", f"{b['left']:,.6g}",
                     b["resets_at"]] for b in budgets], numeric=frozenset({1, 2, 3, 4})) if budgets else \
        '<p class="none">No budgets set (quota.* in the job file).</p>'
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', _MARK,
        f'<meta name="harvester-job" content="{_e(d["job"])}">', refresh_tag,
        f"<title>harvester report: {_e(d['job'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Harvest report: {_e(d['job'])}</h1>",
        f'<p class="sub">store {_e(d["store"])}, plan {_e(d["plan_key"][:12])}; drawn {_when(d["generated_at"])} '
        f"by harvester {_e(__version__)}" + (" (watching: this page reloads itself)" if refresh else "") + "</p>",
        f'<section class="numbers" id="numbers">{numbers}</section>',
        "<h2>Teacher and terms</h2>", teacher,
        "<h2>Traffic</h2>", _charts({k: run_svgs[k] for k in ("rate", "errors", "latency", "tokens")}, ABSENT),
        "<h2>Spend and budgets</h2>", quota, _charts({"budgets": run_svgs["budgets"]}, ABSENT),
        "<h2>Batches</h2>", _charts({"batches": run_svgs["batches"]}, ABSENT),
        "<h2>Runs</h2>", runs if d["runs"] else '<p class="none">No run yet.</p>',
        "<h2>Export</h2>", _export(d, export_svgs),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _reason(name: str | None) -> str:
    if name is None:
        return "running (or killed)"
    r = reasons.BY_NAME.get(name)
    return f"{name} (exit {r.exit_code})" if r is not None and r.exit_code is not None else name


def _export(d: dict[str, Any], svgs: dict[str, str | None]) -> str:
    export = d.get("export")
    if not export:
        return '<p class="none">Not exported yet: `harvester export JOB` writes the dataset; this section then ' \
               "shows what it kept and dropped.</p>"
    s = export["stats"]
    head = (f'<p>{_e(export["folder"])}, exported {_when(export["at"])}: {count_text(s["selected"])} answered rows '
            f'selected, {count_text(sum(s["rows"].values()))} written ('
            + ", ".join(f"{k} {count_text(v)}" for k, v in sorted(s["rows"].items())) + ").</p>")
    drops = _table(["reason", "rows"], [[k, v] for k, v in sorted(s["dropped"].items())], numeric=frozenset({1})) \
        if s["dropped"] else '<p class="none">Nothing dropped.</p>'
    clusters = d.get("clusters") or []
    dups = "".join(
        f"<tr><td class=n>{c['removed'] + 1}</td><td><blockquote>kept: {_e(c['kept_text'])}</blockquote>"
        + "".join(f"<blockquote>removed: {_e(x)}</blockquote>" for x in c["example_texts"]) + "</td></tr>"
        for c in clusters)
    dup_html = (f"<p>Near-duplicate clusters: {count_text(s.get('near_dup_clusters', 0))}; the biggest:</p>"
                f"<table><tr><th>rows</th><th>example answers</th></tr>{dups}</table>") if clusters else \
        '<p class="none">No near-duplicate clusters.</p>'
    return head + _charts(svgs, ABSENT) + "<h3>Drops by reason</h3>" + drops + dup_html


def default_out(store_file: Path | None, job: str) -> Path:
    """Beside the SQLite store; in the current folder for a server database."""
    return (store_file.parent if store_file is not None else Path.cwd()) / f"{job}-report.html"


def check_out(out: Path, protected: list[tuple[str, Path]]) -> None:
    """Refuse, before any work, a path this command did not write: a report is rewritten, nothing else."""
    if out.is_dir():
        raise ConfigError(f"report: {out} is a folder; give --out a file name, e.g. {out / 'report.html'}")
    for what, path in protected:
        if path.exists() and out.exists() and out.resolve() == path.resolve():
            raise ConfigError(f"report: {out} is {what}; give --out another file, e.g. {out.with_suffix('.html')}")
    if out.exists():
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
        except OSError as e:
            raise ConfigError(f"report: cannot read {out} ({e.strerror})") from None
        if _MARK not in head:
            raise ConfigError(f"report: {out} exists and is not a report harvester wrote; it is left as it is. "
                              f"Give --out a new file, e.g. {out.with_name(out.stem + '-report.html')}")


def write(out: Path, text: str, protected: list[tuple[str, Path]]) -> None:
    """Write the page whole (a temporary sibling renamed over it: a browser reloading never reads half)."""
    check_out(out, protected)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would hide the page from a browser run as another user
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

