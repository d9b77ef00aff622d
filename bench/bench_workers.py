"""Many workers on one PostgreSQL store: combined throughput of 1, 2 and 4 `harvester run` processes
against a zero-latency simulator, and the database round trips each request costs.

    python bench/bench_workers.py [--prompts 4000] [--workers 1,2,4] [--pg-url URL]

Without --pg-url (or HARVESTER_TEST_PG_URL) it starts a throwaway PostgreSQL cluster of its own
(server defaults, pg_stat_statements loaded), as `.ci/run` does. Each configuration gets a fresh
database and a fresh simulator process; the job is planned first (not measured), then N workers
start at once. Reported:
- req/s: requests the simulator received, over its first-to-last request span (the steady state:
  excludes process start-up), and over the wall time from spawning the workers to the last exit;
- round trips/request: statements the server executed for the database (BEGIN and COMMIT count:
  each is one client-server exchange), from pg_stat_statements, and transactions/request, from
  pg_stat_database; both read from the server before and after, no hook in harvester;
- worker CPU ms/request: user + system time of the worker processes; and less their start-up
  (interpreter, imports, joining), measured by one more worker run on the finished job.
The limiter is not the bottleneck: the job's limits are far above what one machine can send.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parent.parent
PROC_TIMEOUT = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        sys.exit("no PostgreSQL server found (initdb): install it (apt-get install postgresql) or pass --pg-url")
    return Path(initdb).parent


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A PostgreSQL cluster in a temp folder on a free local port; its admin URL."""
    bindir = pg_bindir()
    tmp = Path(tempfile.mkdtemp(prefix="harvester-bench-pg-"))
    as_pg: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(tmp, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = tmp / "data"
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if list(bindir.parent.glob("lib/pg_stat_statements.so")) or list(Path("/usr/lib").glob("**/pg_stat_statements.so")):
        opts += " -c shared_preload_libraries=pg_stat_statements"
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "server.log"), "-w",
                    "-o", opts, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


class Counters:
    """Server-side counters for one database: statements (pg_stat_statements) and transactions."""

    def __init__(self, engine: sa.Engine, db: str) -> None:
        self.engine, self.db = engine, db
        with engine.connect() as c:
            self.statements = "pg_stat_statements" in c.exec_driver_sql("SHOW shared_preload_libraries").scalar()
            if self.statements:
                c.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def read(self) -> dict[str, float]:
        time.sleep(0.6)  # backends publish their statistics within ~0.5 s (at once when they exit)
        with self.engine.connect() as c:
            c.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            xacts = c.exec_driver_sql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                      (self.db,)).scalar()
            stmts = c.exec_driver_sql(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = %s", (self.db,)).scalar() if self.statements else None
        return {"xacts": float(xacts or 0), "statements": float(stmts) if stmts is not None else float("nan")}


def sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url[:-3] + "/sim/stats", timeout=10) as r:
        return json.load(r)


def one(workers: int, prompts: int, admin_url: str, folder: Path) -> dict[str, Any]:
    db = f"harvester_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{db}"')
    url = sa.engine.make_url(admin_url).set(database=db)
    db_engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    ready = folder / f"sim-{workers}.url"
    sim = subprocess.Popen([sys.executable, "-m", "harvester.cli", "sim", "--port", "0", "--ready-file", str(ready)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.05)
        sim_url = ready.read_text()
        (folder / "prompts.jsonl").write_text("".join(
            json.dumps({"prompt": f"Question number {i}: explain topic {i * 7919 % 1000} briefly."}) + "\n"
            for i in range(prompts)))
        job = folder / f"job-{workers}.yaml"
        job.write_text(yaml.safe_dump({
            "name": "bench", "store": url.render_as_string(hide_password=False),
            "teacher": {"base_url": sim_url, "model": "sim-teacher", "api_key_env": None,
                        "params": {"max_tokens": 64},
                        "limits": {"rpm": 6_000_000, "max_concurrency": 64}},
            "prompts": [{"path": "prompts.jsonl"}]}))
        cli = [sys.executable, "-m", "harvester.cli"]
        subprocess.run([sys.executable, "-c", "import sys; from harvester import Harvester; "  # plan (a dry run
                        "Harvester.from_file(sys.argv[1]).plan()", str(job)],              # writes nothing)
                       check=True, capture_output=True, cwd=REPO)
        counters = Counters(db_engine, db)
        before = counters.read()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        procs = [subprocess.Popen([*cli, "run", "--quiet", str(job)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(workers)]
        errors = [p.communicate(timeout=PROC_TIMEOUT)[1] for p in procs]
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        codes = [p.returncode for p in procs]
        if any(codes):
            raise RuntimeError(f"workers exited {codes}: {errors}")
        after = counters.read()
        stats = sim_stats(sim_url)
        # A worker's fixed cost (interpreter, imports, planning check, joining): one more on the finished job.
        cpu2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*cli, "run", "--quiet", str(job)], check=True, capture_output=True, cwd=REPO)
        cpu3 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        sim.terminate()
        sim.wait(30)
        db_engine.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()
    n = stats["requests"]
    span = stats["last_request"] - stats["first_request"]
    return {"workers": workers, "requests": n, "distinct": stats["distinct_prompts_answered"],
            "twice": stats["prompts_answered_more_than_once"], "span": span, "rps": n / span, "wall": wall,
            "rps_wall": n / wall,
            "stmts_per_req": (after["statements"] - before["statements"]) / n,
            "xacts_per_req": (after["xacts"] - before["xacts"]) / n,
            "cpu_ms_per_req": cpu(cpu0, cpu1) / n * 1000,
            "startup_cpu_s": cpu(cpu2, cpu3),
            "cpu_ms_per_req_net": (cpu(cpu0, cpu1) - workers * cpu(cpu2, cpu3)) / n * 1000}


def cpu(a: Any, b: Any) -> float:
    return (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=4000)
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--pg-url", default=os.environ.get("HARVESTER_TEST_PG_URL"),
                    help="a server where the user may CREATE DATABASE (default: a throwaway cluster)")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    with contextlib.ExitStack() as stack:
        admin_url = args.pg_url or stack.enter_context(throwaway_cluster())
        with sa.create_engine(admin_url).connect() as c:
            version = c.exec_driver_sql("SHOW server_version").scalar()
            settings = dict(c.exec_driver_sql("SELECT name, setting FROM pg_settings WHERE name IN "
                                              "('fsync', 'synchronous_commit', 'shared_buffers')").all())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harvester-bench-")))
        print(f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}); "
              f"{os.cpu_count()} CPUs shared by the simulator, the server and the workers; "
              f"{args.prompts} prompts, zero-latency simulator, max_concurrency 64 in all", flush=True)
        rows = []
        for k in counts:
            rows.append(one(k, args.prompts, admin_url, folder))
            r = rows[-1]
            assert r["distinct"] == args.prompts and r["twice"] == 0, r
    base = rows[0]["rps"]
    print(f"{'workers':>7} {'requests':>8} {'req/s':>8} {'x 1 worker':>10} {'wall s':>7} {'req/s wall':>10} "
          f"{'round trips/req':>15} {'xacts/req':>9} {'worker CPU ms/req':>17} {'(less start-up)':>15}")
    for r in rows:
        print(f"{r['workers']:>7} {r['requests']:>8} {r['rps']:>8.0f} {r['rps'] / base:>10.2f} {r['wall']:>7.1f} "
              f"{r['rps_wall']:>10.0f} {r['stmts_per_req']:>15.2f} {r['xacts_per_req']:>9.2f} "
              f"{r['cpu_ms_per_req']:>17.2f} {r['cpu_ms_per_req_net']:>15.2f}")
    print("every prompt answered exactly once in every configuration (the simulator's count); a worker's "
          f"start-up costs {sum(r['startup_cpu_s'] for r in rows) / len(rows):.1f} s of CPU")


if __name__ == "__main__":
    main()
