"""`harvester sim` as people use it: samples of one prompt answered differently, refusals and empty
answers on demand (the export's filters at work), a key it requires never printed, a port in use
reported in one line; and the job files shipped in jobs/ run against it without a key."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import yaml
from conftest import REPO, cli, popen_cli

from harvester.sim import REFUSAL


def _export_stats(job: Path) -> dict:
    return json.loads((job.parent / "data" / "t" / "stats.json").read_text())


def test_samples_differ_and_injected_refusals_and_empty_answers_are_filtered(sim_factory, make_job) -> None:
    sim = sim_factory(refusal_rate=0.2, empty_rate=0.1)
    job = make_job(sim, n=20, prompts=[{"path": "prompts.jsonl", "samples": 3}])
    assert cli("run", str(job), "--quiet").returncode == 0
    stats = sim.stats()
    assert stats["answered"] == 60 and 0 < stats["refusals"] < 30 and 0 < stats["empty_answers"] < 20
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        rows = c.execute("SELECT j.prompt_key, r.content FROM job j JOIN response r ON r.job_id = j.id").fetchall()
    by_prompt: dict[str, list[str]] = {}
    for key, content in rows:
        by_prompt.setdefault(key, []).append(content)
    real = [[a for a in answers if a and a != REFUSAL] for answers in by_prompt.values()]
    assert sum(len(a) for a in real) == 60 - stats["refusals"] - stats["empty_answers"]
    assert all(len(set(a)) == len(a) for a in real)            # no two samples of a prompt alike
    assert cli("export", str(job)).returncode == 0
    report = _export_stats(job)
    assert report["dropped"].get("refusal") == stats["refusals"]
    assert report["dropped"].get("empty") == stats["empty_answers"]
    assert "exact_duplicate" not in report["dropped"]

    # a fresh simulator answers the same harvest the same way (deterministic by messages and count)
    again = sim_factory(refusal_rate=0.2, empty_rate=0.1)
    job2 = make_job(again, n=20, prompts=[{"path": "prompts.jsonl", "samples": 3}], store="sqlite:///data/u.db")
    assert cli("run", str(job2), "--quiet").returncode == 0
    assert (again.stats()["refusals"], again.stats()["empty_answers"]) == (stats["refusals"], stats["empty_answers"])


def _wait_for(path: Path, proc, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the simulator did not start")


class _SimProcess:
    """`harvester sim --port 0 ...` as a process of its own; its output once stopped (Ctrl-C)."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        ready = tmp_path / "url"
        self.proc = popen_cli("sim", "--port", "0", "--ready-file", str(ready), *args, env=env)
        self.url = _wait_for(ready, self.proc)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url[:-3] + "/sim/stats", timeout=10) as f:
            return json.load(f)

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.communicate(timeout=30)


def test_the_sim_command_never_prints_its_key(make_job, tmp_path: Path) -> None:
    secret = "sk-sim-test-0123456789abcdef-SECRET"
    env = {"HARVESTER_SIM_TEST_KEY": secret}
    sim = _SimProcess(tmp_path, "--api-key-env", "HARVESTER_SIM_TEST_KEY", env=env)
    try:
        job = make_job(SimpleNamespace(url=sim.url), n=5, teacher={"api_key_env": "HARVESTER_SIM_TEST_KEY"})
        r = cli("run", str(job), "--quiet", env=env)
        assert r.returncode == 0, r.stderr
        assert sim.stats()["answered"] == 5          # it did require the key, and got it
    finally:
        out, err = sim.stop()
    assert "required (value not shown)" in out
    assert secret not in out + err and secret[7:27] not in out + err
    help_text = cli("sim", "--help", env=env).stdout
    assert "--api-key-env" in help_text and secret not in help_text


def test_the_sim_command_injects_refusals_and_empty_answers(make_job, tmp_path: Path) -> None:
    sim = _SimProcess(tmp_path, "--refusal-rate", "0.4", "--empty-rate", "0.2")
    try:
        job = make_job(SimpleNamespace(url=sim.url), n=20)
        assert cli("run", str(job), "--quiet").returncode == 0
        stats = sim.stats()
    finally:
        sim.stop()
    assert stats["answered"] == 20 and 0 < stats["refusals"] < 20 and 0 < stats["empty_answers"] < 20
    assert cli("export", str(job)).returncode == 0
    dropped = _export_stats(job)["dropped"]
    assert (dropped["refusal"], dropped["empty"]) == (stats["refusals"], stats["empty_answers"])


def test_a_port_in_use_is_one_line(sim) -> None:
    port = sim.url.rsplit(":", 1)[1].split("/")[0]
    r = cli("sim", "--port", port, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in r.stderr and "--port 0" in r.stderr


def test_the_shipped_job_files_run_against_the_simulator_without_a_key(sim, tmp_path: Path) -> None:
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    shipped = sorted((tmp_path / "jobs").glob("*.yaml"))
    assert len(shipped) >= 2
    env = {k: "" for k in os.environ if k.endswith("API_KEY")} | {"OPENAI_API_KEY": ""}
    for job in shipped:
        data = yaml.safe_load(job.read_text())
        assert data["teacher"]["base_url"] == "http://127.0.0.1:8765/v1"  # `harvester sim`'s default address
        data["teacher"]["base_url"] = sim.url                             # the only change
        job.write_text(yaml.safe_dump(data))
        r = cli("run", str(job), "--quiet", env=env)
        assert r.returncode == 0, f"{job.name}: {r.stdout}{r.stderr}"
        assert "run done" in r.stdout
