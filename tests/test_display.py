"""What people read: the progress in an 80-column terminal, numbers as numbers, money never `$-0.0000`."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from conftest import REPO, cli
from rich.cells import cell_len

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_terminal(args: list[str], columns: int = 80, timeout: float = 120) -> tuple[int, str, str]:
    """The real CLI with its stderr (where the progress goes) on a pseudo-terminal of `columns`
    columns; returns (exit code, what the terminal received, stdout)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "harvester.cli", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace"), stdout


def rendered_lines(raw: str) -> list[str]:
    """Every line as the terminal shows it: escape sequences dropped, each \\r-redraw a line of its own."""
    return [part for line in ANSI.sub("", raw).split("\n") for part in line.split("\r") if part.strip()]


def test_progress_fits_an_80_column_terminal(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.05)
    job = make_job(sim, n=80, teacher={"limits": {"max_concurrency": 4, "rpm": 6000, "tpm": 2000000}})
    code, raw, stdout = run_in_terminal(["run", str(job)])
    assert code == 0, raw
    assert "run done: sent 80 requests, 80 answered" in stdout
    lines = rendered_lines(raw)
    frames = [line for line in lines if "━" in line]
    assert len(frames) >= 3, lines      # it redrew while the run went on
    for line in lines:
        assert cell_len(line) <= 80, f"{cell_len(line)} columns: {line!r}"
    # One line a frame: done/total, the bar and the ETA first, on the line itself (not wrapped below).
    assert "\x1b[1A" not in raw, "a frame took more than one line"
    last = frames[-1]
    assert last.startswith("80/80 ") and re.search(r"━+ eta \S+", last), last
    assert all(re.match(r"\d+/80 ━", f) for f in frames), frames
    assert "2e+06" not in raw and "e+0" not in raw


def test_a_wide_terminal_shows_the_details(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.02)
    job = make_job(sim, n=30, teacher={"limits": {"max_concurrency": 4, "rpm": 6000, "tpm": 2000000}})
    code, raw, _ = run_in_terminal(["run", str(job)], columns=200)
    assert code == 0, raw
    frames = [line for line in rendered_lines(raw) if "━" in line]
    assert frames and all(cell_len(f) <= 200 for f in frames)
    assert "answers/min" in frames[-1] and "tpm=2,000,000" in frames[-1], frames[-1]


def test_plain_progress_prints_limits_as_numbers(sim, make_job) -> None:
    job = make_job(sim, n=10, teacher={"limits": {"tpm": 2000000, "rpm": 3000}})
    r = cli("run", str(job))  # stderr is a pipe: plain lines
    assert r.returncode == 0, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert re.match(r"\[\s*[\d.]+s\] done 10/10  eta \S+  failed 0  ", last), last
    assert "tpm=2,000,000 (config" in last and "rpm=3,000 (config" in last, last
    assert "e+0" not in r.stderr


def test_numbers_and_money_for_people() -> None:
    from harvester.units import count_text, usd_text
    assert count_text(2_000_000.0) == "2,000,000" and count_text(1500.5) == "1,500.5"
    # float residue of reservations added and released: zero, never "$-0.0000"
    assert usd_text(-1e-18) == "$0.00" and usd_text(-0.00004) == "$0.00" and usd_text(0.0) == "$0.00"
    assert (usd_text(4.99857) == "$4.9986" and usd_text(1234.567) == "$1,234.57"
            and usd_text(0.01234) == "$0.0123" and usd_text(0.00001) == "<$0.0001")


def test_quota_never_prints_negative_zero_dollars(sim, make_job) -> None:
    job = make_job(sim, n=30, quota={"usd_total": 5, "prices": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
                   teacher={"provider": "simulator"})
    assert cli("run", str(job), "--quiet").returncode == 0
    r = cli("quota", str(job))
    assert r.returncode == 0, r.stderr
    assert "-0.0" not in r.stdout and "$-" not in r.stdout
    assert re.search(r"usd_total .*\$0\.00\d\d .*\$0\.00 .*\$4\.99\d\d .*\$5\.0000", r.stdout), r.stdout
