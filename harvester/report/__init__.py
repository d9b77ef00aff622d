"""The harvest report: one offline HTML page with plots, drawn from the store alone.

`data` gathers (the commands' own status, quota and export stats; the store's time buckets), `series`
shapes the buckets (pure), `charts` draws with matplotlib, `page` renders and writes the file. This
package imports matplotlib only when a report or an export draws: `harvester run` never pays for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api import Harvester

WATCH_SECONDS = 3.0
PLOTS_FOLDER = "plots"


def render(h: Harvester, *, refresh: float | None = None) -> str:
    from . import charts, data, page

    d = data.gather(h)
    run_svgs = {k: _svg(draw(d), k) for k, draw in charts.RUN_CHARTS.items()}
    stats = d["export"]["stats"] if d["export"] else None
    export_svgs = {k: _svg(draw(stats), k) for k, draw in charts.EXPORT_CHARTS.items()} if stats else {}
    return page.render(d, run_svgs, export_svgs, refresh=refresh)


def _svg(fig: Any, name: str) -> str | None:
    from . import charts
    return None if fig is None else charts.svg(fig, name)


def write_report(h: Harvester, out: Path, protected: list[tuple[str, Path]], *,
                 refresh: float | None = None) -> Path:
    from . import page
    page.check_out(out, protected)       # before the work: a slip is told at once
    page.write(out, render(h, refresh=refresh), protected)
    return out


def watch(h: Harvester, out: Path, protected: list[tuple[str, Path]], *, every: float = WATCH_SECONDS,
          on_write: Callable[[Path], None] | None = None) -> None:
    """Rewrite the report every `every` seconds, its page reloading itself as often, until Ctrl-C
    (KeyboardInterrupt, which the CLI turns into exit 130 as everywhere)."""
    while True:
        began = time.monotonic()
        write_report(h, out, protected, refresh=every)
        if on_write is not None:
            on_write(out)
        time.sleep(max(0.0, every - (time.monotonic() - began)))


def export_plots(stats: dict[str, Any], folder: Path) -> list[tuple[str, str]]:
    """The export's figures as PNG files in the dataset folder (`plots/`), for its card: (title, path)."""
    from . import charts

    titles = {"funnel": "Rows kept and dropped at each step", "lengths": "Answer length in tokens",
              "decontamination": "Decontamination hits per eval set"}
    written = []
    for key, draw in charts.EXPORT_CHARTS.items():
        fig = draw(stats)
        if fig is None:
            continue
        (folder / PLOTS_FOLDER).mkdir(exist_ok=True)
        path = f"{PLOTS_FOLDER}/{key}.png"
        (folder / path).write_bytes(charts.png(fig))
        written.append((titles[key], path))
    return written
