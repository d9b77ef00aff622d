"""Crash soak: SIGKILL the real `harvester run` at random moments, rerun it each time, and check the
store, the export and the quota ledger against the simulator's own log (the ground truth).

    python bench/soak_crash.py [--prompts 3000] [--trials 30] [--concurrency 8] [--seed 0]

What it checks (tests/test_crash.py runs the same harness, CI-sized, and asserts `problems == []`):
- every prompt is answered exactly once in the export, with the simulator's answer for it;
- answers the simulator sent that the store lost, per kill, are answers to jobs the killed run still
  held (leased, not recorded) at the kill, and no more of them than it held; none is lost otherwise;
- every answer the store kept was sent by the simulator in the run that recorded it;
- the store passes `PRAGMA integrity_check` after every kill and at the end;
- the quota ledger agrees with the simulator. The ledger counts every attempt, reserved before the
  send; a reservation a kill left open counts at its worst case once its run is stale, whether the
  request left or not (harvester cannot know). So, once no reservation is open:
      ledger requests = requests the simulator received + reservations open at a kill whose
                        request never arrived (at most max_concurrency per kill),
  hence  simulator requests <= ledger requests <= simulator requests + kills x max_concurrency;
  and the ledger's tokens are at least what the simulator counted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harvester.sim import SimConfig, answer_for, running

REPO = Path(__file__).resolve().parent.parent
MAX_TOKENS = 400          # above the longest simulated answer: no answer is cut (and filtered out)
PROC_TIMEOUT = 120.0        # no wait in this harness is unbounded


def prompt_key(messages: list[dict[str, Any]]) -> str:
    """The simulator's key for a prompt (see harvester.sim: sha256 of the sorted-keys JSON)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Trial:
    index: int
    mode: str                   # "time": killed after a random delay (maybe during start-up); "progress"
    started: float
    killed: bool = False
    exit_code: int | None = None
    run_id: int | None = None   # None: killed before the run was recorded
    leased_at_kill: int = 0     # jobs the dead run held: claimed, not recorded
    reserved_at_kill: int = 0   # ledger reservations it left open
    unsent_at_kill: int = 0     # ... of which the simulator never received the request
    recorded: int = 0           # answers the store kept from this run
    sim_answered: int = 0       # answers the simulator sent during this run
    sim_received: int = 0
    lost: int = 0               # sim_answered - recorded
    integrity: str = ""
    leased_keys: set[str] = field(default_factory=set, repr=False)        # prompts of the jobs it held
    answered_keys: Counter[str] = field(default_factory=Counter, repr=False)  # prompts the sim answered
    received_keys: Counter[str] = field(default_factory=Counter, repr=False)  # prompts the sim received
    open_keys: Counter[str] = field(default_factory=Counter, repr=False)      # prompts of open reservations


@dataclass
class SoakResult:
    prompts: int
    trials: int
    kills: int
    kills_before_the_run_started: int   # killed during start-up: no run recorded yet
    answers_lost: int
    answers_paid_twice: int
    unexplained_losses: int
    integrity_ok: bool
    ledger: dict[str, Any]
    sim: dict[str, Any]
    export_rows: int
    seconds: float
    max_lost_per_kill: int
    max_leased_at_kill: int
    problems: list[str] = field(default_factory=list)
    per_trial: list[Trial] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "per_trial"}


def write_job(folder: Path, url: str, n: int, concurrency: int, lease_seconds: float) -> Path:
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Crash prompt {i}: why does topic {i * 7919 % 997} matter?"}) + "\n")
    job = {
        "name": "crash",
        "teacher": {"base_url": url, "model": "sim-teacher", "api_key_env": None,
                    "params": {"max_tokens": MAX_TOKENS}, "limits": {"max_concurrency": concurrency, "rpm": 60000},
                    "timeout": 30},
        "prompts": [{"path": "prompts.jsonl"}],
        "retry": {"max_attempts": 4, "initial_wait": 0.01, "max_wait": 0.05},
        "quota": {"requests_total": 1_000_000},   # exercises the ledger on every request
        "lease_seconds": lease_seconds,
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "harvester.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _cli_wait(*args: str, log: Path, timeout: float = PROC_TIMEOUT) -> int:
    proc = _cli(*args, log=log)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with _connect(db) as c:
            return c.execute("select count(*) from job where status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:   # not created yet, or mid-creation
        return 0


def integrity(db: Path) -> str:
    if not db.exists():
        return "ok"
    with sqlite3.connect(db, timeout=30) as c:   # read-write: recovers the WAL like the next run would
        return ",".join(r[0] for r in c.execute("pragma integrity_check"))


def _after_kill(db: Path, trial: Trial) -> None:
    """What the dead run left: its run row, the jobs it still held, its open reservations."""
    trial.integrity = integrity(db)
    if not db.exists():
        return
    with _connect(db) as c:
        try:
            row = c.execute("select id, owner from run where started_at >= ? order by id desc limit 1",
                            (trial.started - 1e-3,)).fetchone()
        except sqlite3.OperationalError:
            return
        if row is None:
            return
        trial.run_id, owner = row
        trial.leased_at_kill = c.execute("select count(*) from job where status = 'leased' and lease_owner = ?",
                                         (owner,)).fetchone()[0]
        trial.reserved_at_kill = c.execute("select count(*) from usage where run_id = ? and state = 'reserved'",
                                           (trial.run_id,)).fetchone()[0]
        leased = [json.loads(r[0])["messages"] for r in c.execute(
            "select request from job where status = 'leased' and lease_owner = ?", (owner,))]
        trial.open_keys = Counter(prompt_key(json.loads(r[0])["messages"]) for r in c.execute(
            "select j.request from usage u join job j on j.id = u.job_id where u.run_id = ? and u.state = 'reserved'",
            (trial.run_id,)))
    trial.leased_keys = {prompt_key(m) for m in leased}


def run_soak(workdir: Path, *, prompts: int = 3000, trials: int = 30, concurrency: int = 8,
             latency: float = 0.02, jitter: float = 0.02, lease_seconds: float = 2.0, seed: int = 0,
             time_kill_share: float = 0.25, verbose: bool = False) -> SoakResult:
    """The whole soak in `workdir`; returns the figures and a list of problems (empty when all holds)."""
    t_begin = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    sim_log = workdir / "sim.jsonl"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    problems: list[str] = []
    done_trials: list[Trial] = []
    say = print if verbose else (lambda *a, **k: None)

    with running(SimConfig(latency=latency, jitter=jitter, seed=seed, log_path=str(sim_log))) as sim:
        job = write_job(workdir, sim.url, prompts, concurrency, lease_seconds)
        db = workdir / "data" / "crash.db"
        per_trial = 0.6 * prompts / max(1, trials)
        for i in range(trials):
            before = _done(db)
            trial = Trial(i, "time" if rng.random() < time_kill_share else "progress", time.time())
            proc = _cli("run", str(job), "--quiet", log=logs / f"run-{i:03d}.log")
            deadline = time.monotonic() + PROC_TIMEOUT
            if trial.mode == "time":   # anywhere from interpreter start-up to mid-harvest
                until = time.monotonic() + rng.uniform(0.0, 1.6)
                while proc.poll() is None and time.monotonic() < until:
                    time.sleep(0.01)
            else:                      # after a random number of answers, at a random moment after a commit
                left = prompts - before   # never so many that the run finishes before the kill
                target = before + max(1, min(round(rng.uniform(0.2, 1.8) * per_trial), left // 2))
                while proc.poll() is None and _done(db) < target and time.monotonic() < deadline:
                    time.sleep(0.01)
                if time.monotonic() >= deadline:
                    problems.append(f"trial {i}: {target - _done(db)} answers short after "
                                    f"{PROC_TIMEOUT:.0f} s: a hang?")
                time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                trial.killed = True
            trial.exit_code = proc.wait(timeout=30)
            if not trial.killed and trial.exit_code != 0:
                problems.append(f"trial {i}: the run exited {trial.exit_code} by itself (see {logs}/run-{i:03d}.log)")
            _after_kill(db, trial)
            if trial.integrity != "ok":
                problems.append(f"trial {i}: integrity_check says {trial.integrity}")
            done_trials.append(trial)
            say(f"trial {i:3d} {trial.mode:8s} killed={trial.killed} run={trial.run_id} "
                f"done={_done(db)} leased_at_kill={trial.leased_at_kill} reserved={trial.reserved_at_kill}")

        # Let every dead run's heartbeat go stale, so the next run counts their open reservations as lost
        # and their leases have expired; then finish the harvest.
        time.sleep(lease_seconds + 1.5)
        finals: list[Trial] = []
        for k in range(3):
            t = Trial(trials + k, "final", time.time())
            t.exit_code = _cli_wait("run", str(job), "--quiet", log=logs / f"final-{k}.log")
            _after_kill(db, t)
            finals.append(t)
            if t.exit_code != 0:
                problems.append(f"final run {k} exited {t.exit_code} (see {logs}/final-{k}.log)")
            if _done(db) == prompts:
                break
            time.sleep(lease_seconds + 0.5)
        requests_before_rerun = sim.stats()["requests"]
        code = _cli_wait("run", str(job), "--quiet", log=logs / "rerun.log")
        if code != 0 or sim.stats()["requests"] != requests_before_rerun:
            problems.append(f"a rerun of a finished job exited {code} and sent "
                            f"{sim.stats()['requests'] - requests_before_rerun} requests (want 0, 0)")
        if _cli_wait("export", str(job), log=logs / "export.log") != 0:
            problems.append("export failed")
        quota_out = subprocess.run([sys.executable, "-m", "harvester.cli", "quota", str(job), "--json"],
                                   capture_output=True, text=True, timeout=PROC_TIMEOUT, cwd=REPO)
        ledger = json.loads(quota_out.stdout)["total"] if quota_out.returncode == 0 else {}
        if quota_out.returncode != 0:
            problems.append(f"quota --json failed: {quota_out.stderr[-500:]}")
        stats = sim.stats()
    # the simulator is stopped: its log is complete

    # Each request belongs to the run that was alive when the simulator received it; its answer may be
    # logged a little later (after a kill, the simulator still answers the dead client), so an answer
    # takes the time of its prompt's latest "received" before it.
    events = [json.loads(line) for line in sim_log.read_text().splitlines()]
    received_at: dict[str, float] = {}
    for e in events:
        if e["event"] == "received":
            received_at[e["prompt"]] = e["t"]
        else:
            e["sent_t"] = received_at[e["prompt"]]
    all_trials = done_trials + finals
    starts = [t.started for t in all_trials] + [float("inf")]
    answered: Counter[str] = Counter(e["prompt"] for e in events if e["event"] == "answered")
    for t, nxt in zip(all_trials, starts[1:]):
        t.received_keys = Counter(e["prompt"] for e in events
                                  if e["event"] == "received" and t.started <= e["t"] < nxt)
        t.sim_received = sum(t.received_keys.values())
        t.unsent_at_kill = sum((t.open_keys - t.received_keys).values())
        t.answered_keys = Counter(e["prompt"] for e in events
                                  if e["event"] == "answered" and t.started <= e["sent_t"] < nxt)
        t.sim_answered = sum(t.answered_keys.values())

    final_integrity = integrity(db)
    if final_integrity != "ok":
        problems.append(f"final integrity_check: {final_integrity}")
    with _connect(db) as c:
        by_run: dict[int, Counter[str]] = {}
        for run_id, request in c.execute("select r.run_id, j.request from response r join job j on j.id = r.job_id"):
            by_run.setdefault(run_id, Counter())[prompt_key(json.loads(request)["messages"])] += 1
        status = dict(c.execute("select status, count(*) from job group by status").fetchall())
        plan = [prompt_key(json.loads(r[0])["messages"]) for r in c.execute("select request from job")]

    unexplained = 0
    for t in all_trials:
        recorded = by_run.get(t.run_id, Counter()) if t.run_id is not None else Counter()
        sent = t.answered_keys
        t.recorded = sum(recorded.values())
        t.lost = t.sim_answered - t.recorded
        if recorded - sent:
            problems.append(f"run {t.index}: the store holds {sum((recorded - sent).values())} answers the "
                            "simulator did not send in that run")
        lost_keys = sent - recorded
        leased = t.leased_keys
        outside = [k for k in lost_keys if k not in leased] if t.killed else list(lost_keys)
        if outside or any(v > 1 for v in lost_keys.values()):
            unexplained += sum(lost_keys[k] for k in outside) + sum(v - 1 for v in lost_keys.values() if v > 1)
            problems.append(f"run {t.index} ({t.mode}): {len(outside)} answers lost that the run did not "
                            "hold at a kill")
        if t.killed and t.lost > t.leased_at_kill:
            problems.append(f"trial {t.index}: lost {t.lost} answers, more than the {t.leased_at_kill} in flight")
        if t.unsent_at_kill > concurrency:
            problems.append(f"trial {t.index}: {t.unsent_at_kill} reservations open for requests never sent, "
                            "more than max_concurrency")

    # The export: every prompt once, with the simulator's answer.
    rows = [json.loads(line) for line in (workdir / "data" / "crash" / "train.jsonl").read_text().splitlines()] \
        if (workdir / "data" / "crash" / "train.jsonl").exists() else []
    keys = Counter(prompt_key(r["messages"][:-1]) for r in rows)
    if sorted(keys) != sorted(set(plan)) or any(v != 1 for v in keys.values()) or len(plan) != prompts:
        problems.append(f"export: {len(rows)} rows, {len(keys)} distinct prompts, want {prompts} once each")
    # a prompt answered k times (paid twice after a kill) holds one of the simulator's first k answers to it
    wrong = sum(r["messages"][-1]["content"] not in {
        answer_for(r["messages"][:-1], MAX_TOKENS, nth)[0]
        for nth in range(max(1, answered[prompt_key(r["messages"][:-1])]))} for r in rows)
    if wrong:
        problems.append(f"export: {wrong} answers differ from what the simulator sent")
    if status.get("done", 0) != prompts:
        problems.append(f"store: jobs by status {status}, want {prompts} done")
    if set(answered) != set(plan):
        problems.append(f"simulator answered {len(answered)} distinct prompts, want {prompts}")

    # The ledger against the simulator.
    kills = sum(t.killed for t in done_trials)
    paid_twice = sum(v - 1 for v in answered.values())
    lost_total = sum(max(0, t.lost) for t in all_trials)
    open_at_kills = sum(t.reserved_at_kill for t in done_trials if t.killed)
    unsent = sum(t.unsent_at_kill for t in all_trials)
    # Requests the simulator received whole (its log); its `requests` counter also counts a request
    # whose body was cut off by a kill, which no provider would bill.
    received = sum(e["event"] == "received" for e in events)
    if ledger:
        if ledger.get("requests_reserved") != 0:
            problems.append(f"ledger: {ledger.get('requests_reserved')} reservations still open")
        if ledger["requests"] != received + unsent:
            problems.append(f"ledger: {ledger['requests']} requests, want the simulator's {received} "
                            f"+ {unsent} reserved at a kill and never sent")
        if ledger["input_tokens"] < stats["prompt_tokens"] or ledger["output_tokens"] < stats["completion_tokens"]:
            problems.append("ledger: fewer tokens than the simulator counted")
    if lost_total != paid_twice:
        problems.append(f"answers lost {lost_total} != answers paid twice {paid_twice}")

    return SoakResult(
        prompts=prompts, trials=trials, kills=kills, answers_lost=lost_total, answers_paid_twice=paid_twice,
        kills_before_the_run_started=sum(t.killed and t.run_id is None for t in done_trials),
        unexplained_losses=unexplained,
        integrity_ok=all(t.integrity == "ok" for t in all_trials) and final_integrity == "ok",
        ledger={**ledger, "simulator_requests": received, "simulator_connections": stats["requests"],
                "open_at_kills": open_at_kills, "unsent_at_kills": unsent,
                "max_unsent_at_a_kill": max((t.unsent_at_kill for t in all_trials), default=0)},
        sim={k: stats[k] for k in ("requests", "answered", "distinct_prompts_answered",
                                   "prompts_answered_more_than_once")},
        export_rows=len(rows), seconds=round(time.monotonic() - t_begin, 1),
        max_lost_per_kill=max((t.lost for t in done_trials if t.killed), default=0),
        max_leased_at_kill=max((t.leased_at_kill for t in done_trials), default=0),
        problems=problems, per_trial=all_trials)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--lease-seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the store, logs and export here")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-crash-") as tmp:
        workdir = args.workdir or Path(tmp)
        r = run_soak(workdir, prompts=args.prompts, trials=args.trials, concurrency=args.concurrency,
                     latency=args.latency, jitter=args.latency, lease_seconds=args.lease_seconds,
                     seed=args.seed, verbose=args.verbose)
    print(f"prompts              {r.prompts}")
    print(f"trials               {r.trials}")
    print(f"kills (SIGKILL)      {r.kills}   ({r.kills_before_the_run_started} during start-up, "
          "before the run was recorded)")
    print(f"answers lost         {r.answers_lost}   (sent by the simulator, not kept; every one in flight at a kill:"
          f" at most {r.max_lost_per_kill} at one kill; a killed run held at most {r.max_leased_at_kill} jobs)")
    print(f"answers paid twice   {r.answers_paid_twice}   (of which not explained by a kill: {r.unexplained_losses})")
    print(f"export rows          {r.export_rows}   (each prompt exactly once)")
    print(f"integrity_check      {'ok' if r.integrity_ok else 'FAILED'}")
    led = r.ledger
    print(f"ledger requests      {led.get('requests')} = simulator requests {led['simulator_requests']} + "
          f"{led['unsent_at_kills']} reserved at a kill, never sent (at most {led['max_unsent_at_a_kill']} at one "
          f"kill; {led['open_at_kills']} open at the kills in all); open reservations now "
          f"{led.get('requests_reserved')}")
    print(f"seconds              {r.seconds}")
    print("problems             " + ("none" if not r.problems else "\n  " + "\n  ".join(r.problems)))
    sys.exit(1 if r.problems else 0)


if __name__ == "__main__":
    main()
