"""Shared fixtures: a real simulator on 127.0.0.1, job files in a temp folder, the real CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from harvester.sim import SimConfig, Simulator, running

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Simulator]]:
    """Start simulators (stopped at the end of the test): `sim_factory(latency=0.01, rpm=600)`."""
    stack = []

    def start(**kwargs: Any) -> Simulator:
        ctx = running(SimConfig(**kwargs))
        sim = ctx.__enter__()
        stack.append(ctx)
        return sim

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def sim(sim_factory: Callable[..., Simulator]) -> Simulator:
    return sim_factory()


def write_prompts(folder: Path, n: int, name: str = "prompts.jsonl") -> Path:
    path = folder / name
    with path.open("w") as f:
        for i in range(n):
            f.write(f'{{"prompt": "Question number {i}: explain topic {i * 7919 % 1000} briefly."}}\n')
    return path


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a job file for `sim` with `n` prompts; keyword arguments override job keys."""

    def make(sim: Simulator, n: int = 20, **overrides: Any) -> Path:
        write_prompts(tmp_path, n)
        job: dict[str, Any] = {
            "name": "t",
            "teacher": {"base_url": sim.url, "model": "sim-teacher", "api_key_env": None,
                        "params": {"max_tokens": 400},
                        "limits": {"max_concurrency": 8}},
            "prompts": [{"path": "prompts.jsonl"}],
            "retry": {"max_attempts": 4, "initial_wait": 0.01, "max_wait": 0.05},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(job.get(key), dict):
                job[key] = {**job[key], **value}
            else:
                job[key] = value
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(job))
        return path

    return make


def store_count(job: Path, sql: str) -> int:
    """One count from the job's SQLite store (data/t.db beside the job file); 0 before it exists."""
    try:
        with sqlite3.connect(job.parent / "data" / "t.db", timeout=5) as c:
            return c.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `harvester` command."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harvester.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def popen_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "harvester.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO)


@contextmanager
def fresh_pg_database(server: str) -> Iterator[str]:
    """A new database on the PostgreSQL `server` (a URL whose user may CREATE DATABASE), dropped after."""
    import uuid

    import sqlalchemy as sa
    name = f"harvester_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
