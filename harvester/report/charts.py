"""The report's charts, drawn with matplotlib: SVG for the page (text kept as text, no script), PNG for
the dataset card. Each function takes the plain data of harvester.report.data and returns a Figure, or
None when there is nothing to draw. matplotlib's object API (Figure, not pyplot): no global state.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.figure import Figure

matplotlib.rcParams.update({
    "svg.fonttype": "none",          # text stays text in the SVG: smaller, sharp, searchable
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.titlelocation": "left",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "legend.frameon": False, "legend.fontsize": 8, "figure.dpi": 100,
})

# One colour per meaning, the same on every chart.
COLORS = {"requests": "#4c72b0", "answers": "#2ca02c", "limit": "#d62728", "429": "#ff7f0e",
          "retries": "#8c564b", "dropped": "#d62728", "kept": "#2ca02c", "truncated": "#ff7f0e",
          "in": "#4c72b0", "out": "#9467bd"}
ERROR_COLORS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#8c564b", "#1f77b4", "#aec7e8")


DAY = 86400.0


def _times(t: Sequence[float]) -> list[float]:
    """Epoch seconds as matplotlib's dates (days since its epoch, 1970-01-01 UTC)."""
    return [x / DAY for x in t]


def _figure(height: float = 2.8, width: float = 7.2) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


MIN_SPAN = 10 / 86400        # days: a time axis spans at least 10 s (a tick per second at most)


def _time_axis(ax: Any) -> None:
    # From the data, not the view: a single bucket's view is autoscaled by 5% of its date (years wide)
    lo, hi = ax.dataLim.intervalx
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo < MIN_SPAN:
        ax.set_xlim(lo, lo + MIN_SPAN)
    ax.xaxis_date(UTC)
    locator = mdates.AutoDateLocator(maxticks=8, tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]


def _plain_log(axis: Any) -> None:
    """A log axis labelled 0.05, 0.1, 1, not 5x10^-2."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _legend(fig: Figure, ax: Any, ncols: int = 4) -> None:
    """The legend under the chart, never over the lines."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(handles)))


def _step(ax: Any, t: list[float], width: float, values: Sequence[float | None], **kw: Any) -> None:
    """Buckets starting at `t` (days), each `width` seconds wide: the last one drawn to its end too, so a
    harvest of one bucket shows as a level, not as nothing."""
    ys = [float("nan") if v is None else v for v in values]
    if t:
        t, ys = [*t, t[-1] + width / DAY], [*ys, ys[-1]]
    ax.step(t, ys, where="post", **kw)


def rate(d: dict[str, Any]) -> Figure | None:
    """Requests and answers per second against the request limit in force; each worker's share."""
    a, t = d["attempts"], _times(d["t"])
    if not any(a["requests"]) and not any(d["answers"]["answers"]):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    width = d["width"]
    runs = a["by_run"]
    if len(runs) > 1:
        ax.stackplot(t, *[[n / width for n in v] for v in runs.values()], step="post", alpha=0.35,
                     labels=[f"run {r}" for r in runs])
    _step(ax, t, d["width"], [n / width for n in a["requests"]], color=COLORS["requests"], label="requests/s")
    _step(ax, t, d["width"], [n / width for n in d["answers"]["answers"]], color=COLORS["answers"], label="answers/s")
    for i, seg in enumerate(d["limits"]):
        start, end = _times([seg["start"], seg["end"]])
        ax.hlines(seg["per_second"], start, end, colors=COLORS["limit"], linestyles="--",
                  label=f"limit ({seg['source']})" if i == 0 else "_")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Requests and answers per second ({_width_text(width)} buckets)")
    _legend(fig, ax)
    _time_axis(ax)
    return fig


def errors(d: dict[str, Any]) -> Figure | None:
    """429s, other errors by class, and retries, per bucket."""
    a, t = d["attempts"], _times(d["t"])
    if not a["by_kind"] and not any(a["retries"]):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    width_days = d["width"] / DAY
    bottom = [0] * len(t)
    for i, (kind, counts) in enumerate(a["by_kind"].items()):
        color = COLORS["429"] if kind == "http_429" else ERROR_COLORS[i % len(ERROR_COLORS)]
        ax.bar(t, counts, width=width_days, bottom=bottom, align="edge", color=color, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts)]
    _step(ax, t, d["width"], a["retries"], color=COLORS["retries"], label="retries")
    ax.set_ylabel(f"per {_width_text(d['width'])}")
    ax.set_title("429s, retries and errors by class")
    _legend(fig, ax, ncols=6)
    _time_axis(ax)
    return fig


def latency(d: dict[str, Any]) -> Figure | None:
    """p50/p90/p99 over time, and their distribution."""
    lat, t = d["latency"], _times(d["t"])
    if not sum(lat["histogram"]):
        return None
    fig = _figure(height=2.8)
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        _step(left, t, d["width"], lat[q], color=COLORS["requests"], linestyle=style, label=q)
    left.set_yscale("log")
    _plain_log(left.yaxis)
    left.set_ylabel("seconds")
    left.set_title("Latency of attempts")
    _legend(fig, left)
    _time_axis(left)
    edges, hist = lat["edges"], lat["histogram"]
    lows = [edges[0] / 10 ** (1 / 8), *edges]
    highs = [*edges, edges[-1] * 10 ** (1 / 8)]
    right.bar(lows, hist, width=[h - lo for lo, h in zip(lows, highs)], align="edge", color=COLORS["requests"])
    for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        if lat["overall"][q] is not None:
            right.axvline(lat["overall"][q], color=COLORS["limit"], linestyle=style, linewidth=1)
    used = [i for i, n in enumerate(hist) if n]
    right.set_xscale("log")
    _plain_log(right.xaxis)
    right.set_xlim(lows[used[0]], highs[used[-1]])
    right.set_xlabel("seconds")
    right.set_title("Distribution")
    return fig


def tokens(d: dict[str, Any]) -> Figure | None:
    ans, t = d["answers"], _times(d["t"])
    if not any(ans["prompt_tokens"]) and not any(ans["completion_tokens"]):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    per = 60 / d["width"]
    _step(ax, t, d["width"], [n * per for n in ans["prompt_tokens"]], color=COLORS["in"], label="tokens in")
    _step(ax, t, d["width"], [n * per for n in ans["completion_tokens"]], color=COLORS["out"], label="tokens out")
    ax.set_ylabel("per minute")
    ax.set_ylim(bottom=0)
    ax.set_title("Tokens of the answers, in and out")
    _legend(fig, ax)
    _time_axis(ax)
    return fig


def budgets(d: dict[str, Any]) -> Figure | None:
    """Cumulative spend, then each budget's use in its window against its limit, with its resets."""
    spent, t = d["spend"], _times(d["t"])
    rows = spent["budgets"]
    if not any(spent["usd"]) and not rows:
        return None
    fig = _figure(height=2.6, width=4.2 * (1 + len(rows)))
    axes = fig.subplots(1, 1 + len(rows), squeeze=False)[0]
    _step(axes[0], t, d["width"], spent["usd"], color=COLORS["requests"], label="spent")
    axes[0].set_ylabel("USD")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Cumulative spend (the quota ledger)")
    for ax, b in zip(axes[1:], rows):
        _step(ax, t, d["width"], b["values"], color=COLORS["requests"], label="used")
        ax.axhline(b["limit"], color=COLORS["limit"], linestyle="--", label=f"limit {b['limit']:,g}")
        for k in b["resets"]:
            ax.axvline(t[k], color="#7f7f7f", linestyle=":", linewidth=1)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(b["metric"])
        ax.set_title(f"{b['name']}: {b['used']:,.4g} of {b['limit']:,g}\nresets {_reset_text(b['resets_at'])}")
        ax.legend(loc="center left")
    for ax in axes:
        _time_axis(ax)
    return fig


def batches(d: dict[str, Any]) -> Figure | None:
    """Each provider batch: recorded, submitted (in progress), ended, collected; with its line counts."""
    rows = [b for b in d["batches"] if b["created_at"]]
    if not rows:
        return None
    fig = _figure(height=0.9 + 0.32 * len(rows))
    ax = fig.add_subplot()
    ax.grid(False, axis="y")
    for y, b in enumerate(rows):
        marks = [b["created_at"], b["submitted_at"], b["ended_at"], b["collected_at"]]
        for (start, end), color in zip(zip(marks, marks[1:]), ("#c6dbef", "#6baed6", "#2171b5")):
            if start and end:
                ax.broken_barh([(start / DAY, (end - start) / DAY)], (y - 0.35, 0.7), color=color)
        end = next((m for m in reversed(marks) if m), b["created_at"])
        ax.text(end / DAY, y, f"  {b['lines']:,} lines, {b['succeeded']:,} ok, "
                f"{b['failed']:,} failed ({b['outcome'] or b['state']})", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"batch {b['id']}" for b in rows])
    ax.invert_yaxis()
    ax.set_title("Batches: submitting (light), in progress, ended to collected (dark)")
    _time_axis(ax)
    return fig


def funnel(stats: dict[str, Any]) -> Figure | None:
    """The export's steps: rows kept and dropped at each."""
    steps = [("selected", stats["selected"], 0)] + [(s["step"], s["kept"], s["dropped"]) for s in stats["steps"]]
    steps.append(("written", sum(stats["rows"].values()), 0))
    fig = _figure(height=0.8 + 0.32 * len(steps))
    ax = fig.add_subplot()
    ax.grid(False, axis="y")
    names = [s for s, _, _ in steps]
    kept = [k for _, k, _ in steps]
    dropped = [d for _, _, d in steps]
    ax.barh(names, kept, color=COLORS["kept"], label="kept")
    ax.barh(names, dropped, left=kept, color=COLORS["dropped"], label="dropped")
    for y, (k, dr) in enumerate(zip(kept, dropped)):
        ax.text(k + dr, y, f"  {k:,}" + (f" (-{dr:,})" if dr else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(kept[0], 1) * 1.25)
    ax.set_title("Export: rows kept and dropped at each step")
    ax.legend(loc="lower right")
    return fig


def lengths(stats: dict[str, Any]) -> Figure | None:
    """The selected answers' length in tokens; those cut by max_tokens marked (the truncated filter drops them)."""
    h = stats.get("lengths") or {}
    if not sum(h.get("rows") or []):
        return None
    edges = h["edges"]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    whole = [k - tr for k, tr in zip(h["rows"], h["truncated"])]
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(edges[:-1], whole, width=widths, align="edge", color=COLORS["kept"], label="finished")
    ax.bar(edges[:-1], h["truncated"], width=widths, bottom=whole, align="edge", color=COLORS["truncated"],
           label=f"truncated (finish_reason length): {sum(h['truncated']):,}")
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("rows")
    ax.set_title(f"Export: answer length of the {stats['selected']:,} rows selected")
    _legend(fig, ax)
    return fig


def decontamination(stats: dict[str, Any]) -> Figure | None:
    hits = stats.get("decontamination") or {}
    if not hits:
        return None
    fig = _figure(height=0.8 + 0.3 * len(hits))
    ax = fig.add_subplot()
    ax.grid(False, axis="y")
    names = sorted(hits)
    ax.barh(names, [hits[n] for n in names], color=COLORS["dropped"])
    for y, n in enumerate(names):
        ax.text(hits[n], y, f"  {hits[n]:,}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_title("Export: rows dropped as contaminated, per eval set")
    return fig


def _width_text(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:g} {unit}"
    return f"{seconds:g} s"


def _reset_text(resets_at: str) -> str:
    try:
        return datetime.fromisoformat(resets_at).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return resets_at


def svg(fig: Figure, name: str) -> str:
    """The figure as inline SVG (no XML prologue), sized by the page. Several SVGs share one page: each
    one's ids (matplotlib numbers them per figure: figure_1, axes_1, clip paths...) and the references to
    them get the prefix `name-`, so no SVG takes another's."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', text)
    return re.sub(r'(url\(#|href="#)([^")]+)', rf"\g<1>{name}-\2", text)


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


# What the run section and the export section draw, by chart id (the page's data-chart attribute).
RUN_CHARTS: dict[str, Callable[[dict[str, Any]], Figure | None]] = {
    "rate": rate, "errors": errors, "latency": latency, "tokens": tokens, "budgets": budgets, "batches": batches}
EXPORT_CHARTS: dict[str, Callable[[dict[str, Any]], Figure | None]] = {
    "funnel": funnel, "lengths": lengths, "decontamination": decontamination}
