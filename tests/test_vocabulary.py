"""Each list is stated once: run reasons and their exit codes, export formats, quota metrics × windows,
the price formula; and the typed results (`status`, `quota`, `estimate`) have the shapes they declare."""

from __future__ import annotations

import ast
import re
import types
import typing
from typing import Any, NotRequired, Union, get_args, get_origin, is_typeddict

from conftest import REPO, cli

from harvester import Harvester, errors
from harvester.api import EXIT_CODES, RunResult
from harvester.budgets import BUDGETS, METRICS, WINDOWS, budget_name
from harvester.config import Export, Quota, job_from_dict
from harvester.export import formats, names
from harvester.quota import parse_budgets
from harvester.reasons import BY_NAME, REASONS
from harvester.results import Estimate, QuotaReport, Status, StoreStatus
from harvester.store import ledger

SOURCES = sorted((REPO / "harvester").rglob("*.py"))


# --- run reasons ---------------------------------------------------------------------------------

def test_exit_codes_are_the_reasons_and_stay_as_they_were() -> None:
    assert EXIT_CODES == {"done": 0, "incomplete": 1, "misconfigured": 1, "fatal": 1, "error": 1, "config": 2,
                          "quota": 3, "unavailable": 4, "detached": 5, "closed": 6, "interrupted": 130}
    assert EXIT_CODES == {r.name: r.exit_code for r in REASONS if r.exit_code is not None}
    # a run found killed (`status` only); a batch run's handover to the synchronous path (never an exit)
    assert set(BY_NAME) == set(EXIT_CODES) | {"crashed", "deadline"}
    for name, code in EXIT_CODES.items():
        assert RunResult(name, "", 0, 0, 0, {}).exit_code == code
    assert RunResult("no such reason", "", 0, 0, 0, {}).exit_code == 1
    heads = [r.exit_code for r in REASONS if r.headline]
    assert sorted(heads) == sorted(set(EXIT_CODES.values())), "one headline per exit code"


def test_the_error_classes_exit_with_their_reasons_codes() -> None:
    expected = {errors.HarvesterError: 1, errors.ConfigError: 2, errors.PromptSourceError: 2, errors.StoreError: 2,
                errors.TermsRefused: 2, errors.QuotaExceeded: 3, errors.Interrupted: 130, errors.TeacherError: 1,
                errors.RetryableError: 1, errors.PermanentError: 1, errors.FatalError: 1}
    for cls, code in expected.items():
        assert cls.exit_code == code == EXIT_CODES[cls.reason], cls
    assert errors.__doc__ is not None and "{" not in errors.__doc__
    assert "QuotaExceeded                   exit 3:" in errors.__doc__
    assert "Interrupted                     exit 130:" in errors.__doc__


def test_the_cli_help_lists_every_reason_with_its_code() -> None:
    r = cli("run", "--help")
    assert r.returncode == 0, r.stderr
    for reason in REASONS:
        code = "-" if reason.exit_code is None else str(reason.exit_code)
        assert re.search(rf"^\s*{re.escape(code)}\s+{reason.name}\s+\S", r.stdout, re.M), (reason, r.stdout)
    top = " ".join(cli("--help").stdout.split())
    for reason in REASONS:
        if reason.headline:
            assert f"{reason.exit_code} {reason.headline}" in top, top


def test_the_readme_gives_every_exit_code() -> None:
    text = (REPO / "README.md").read_text()
    line = text[text.index("Exit codes: `0`"):]
    line = line[:line.index("\n\n")]
    assert set(re.findall(r"`(\d+)`", line)) == {str(c) for c in EXIT_CODES.values()}


def _literal_reasons() -> list[tuple[str, int, str]]:
    """Reason names written in the code: RunOutcome("x"...), crawler.stop("x"...), exit_reason="x",
    ["exit_reason"] = "x", and == "x" / != "x" on a `.reason` or `exit_reason`."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(REPO))

        def text(node: ast.AST) -> str | None:
            return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in ("RunOutcome", "stop") and node.args and text(node.args[0]):
                    found.append((where, node.lineno, text(node.args[0])))
                for kw in node.keywords:
                    if kw.arg == "exit_reason" and text(kw.value):
                        found.append((where, node.lineno, text(kw.value)))
            elif isinstance(node, ast.Assign) and text(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Subscript) and text(target.slice) == "exit_reason":
                        found.append((where, node.lineno, text(node.value)))
            elif isinstance(node, ast.Compare) and len(node.comparators) == 1 and text(node.comparators[0]):
                left = node.left
                if isinstance(left, ast.Attribute) and left.attr in ("reason", "exit_reason"):
                    found.append((where, node.lineno, text(node.comparators[0])))
    return found


def test_every_reason_the_code_names_is_in_the_vocabulary() -> None:
    found = _literal_reasons()
    assert {"done", "quota", "unavailable", "crashed", "interrupted", "fatal"} <= {r for _, _, r in found}
    unknown = [f"{where}:{line}: {reason!r}" for where, line, reason in found if reason not in BY_NAME]
    assert not unknown, unknown


# --- export formats ------------------------------------------------------------------------------

def test_export_formats_are_one_list() -> None:
    assert names.FORMATS == ("openai", "alpaca", "sharegpt", "trl")
    assert get_args(Export.model_fields["format"].annotation) == names.FORMATS
    assert tuple(formats.FORMATS) == names.FORMATS
    assert set(formats.JSONL_EXTRAS) == set(names.FORMATS)
    for fmt in names.FORMATS:
        assert formats.arrow_schema(fmt).names


# --- quota metrics × windows ---------------------------------------------------------------------

def test_quota_fields_are_metrics_times_windows() -> None:
    fields = [f for f in Quota.model_fields if f != "prices"]
    assert fields == list(BUDGETS) == [budget_name(m, w) for m in METRICS for w in WINDOWS]
    assert "tokens_per_day" in fields and "usd_total" in fields and "requests_per_run" in fields
    for name, (metric, _) in BUDGETS.items():
        assert Quota.model_fields[name].annotation == (METRICS[metric] | None)
    assert set(ledger.amounts(1, 2, 3, 0.5)) == set(METRICS)
    assert set(ledger.window_keys(7, "2026-01-02", "2026-01")) == set(WINDOWS)


def test_budget_names_read_back_as_their_metric_and_window() -> None:
    job = job_from_dict({"name": "q", "teacher": {"model": "m", "api_key_env": None},
                         "prompts": [{"path": "p.jsonl"}],
                         "quota": {"input_tokens_per_day": 10, "usd_total": 1.5, "tokens_per_month": 7}})
    assert [(b.name, b.metric, b.window, b.limit) for b in parse_budgets(job)] == [
        ("input_tokens_per_day", "input_tokens", "day", 10.0), ("tokens_per_month", "tokens", "month", 7.0),
        ("usd_total", "usd", "total", 1.5)]


# --- the price formula ---------------------------------------------------------------------------

def test_prices_are_multiplied_in_one_place() -> None:
    """Only `pricing._dollars` computes with a price per million tokens (or divides by a million)."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for fn in scopes:
            for node in ast.walk(fn):
                if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)) and any(
                        "per_mtok" in ast.unparse(side) or (isinstance(side, ast.Constant) and side.value == 1e6)
                        for side in (node.left, node.right)):
                    found.append(f"{path.relative_to(REPO)}:{fn.name}")
    assert set(found) == {"harvester/pricing.py:_dollars"}, found


# --- the typed results ---------------------------------------------------------------------------

def _keys(td: Any) -> tuple[dict[str, Any], set[str]]:
    """A TypedDict's hints and its required keys. `NotRequired` is read from the hints: under
    `from __future__ import annotations` the class's own `__required_keys__` cannot see it."""
    hints = typing.get_type_hints(td, include_extras=True)
    optional = set(td.__optional_keys__) | {k for k, t in hints.items() if get_origin(t) is NotRequired}
    return hints, set(hints) - optional


def _fits(value: Any, hint: Any, where: str) -> None:
    if get_origin(hint) is NotRequired:
        hint = get_args(hint)[0]
    if hint is Any:
        return
    if is_typeddict(hint):
        assert isinstance(value, dict), where
        hints, required = _keys(hint)
        assert required <= set(value) <= set(hints), (where, sorted(value), sorted(hints))
        for key, item in value.items():
            _fits(item, hints[key], f"{where}.{key}")
        return
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        problems = []
        for option in get_args(hint):
            try:
                _fits(value, option, where)
                return
            except AssertionError as e:
                problems.append(e)
        raise AssertionError(where, value, hint, problems)
    if hint is type(None):
        assert value is None, where
    elif origin is list:
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _fits(item, get_args(hint)[0], f"{where}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict), where
    elif hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, value)
    elif hint is int:
        assert isinstance(value, int) and not isinstance(value, bool), (where, value)
    else:
        assert isinstance(value, hint), (where, value, hint)


def test_status_quota_and_estimate_have_their_declared_shapes(sim, make_job) -> None:
    quota = {"usd_total": 5, "requests_per_day": 100, "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    job = make_job(sim, n=4, quota=quota)
    with Harvester.from_file(job) as h:
        status = h.status()                 # never run: the head alone
        _fits(status, Status, "status")
        assert set(status) == {"job", "store", "planned", "plan_key"} and status["planned"] is False
        _fits(h.quota(), QuotaReport, "quota")
        est = h.estimate()
        _fits(est, Estimate, "estimate")
        assert est["expected"] is None and est["budgets"] and est["prices"] is not None
        result = h.run_sync(handle_signals=False)
        _fits(result.status, StoreStatus, "result.status")
        status = h.status()
        _fits(status, Status, "status")
        assert set(_keys(Status)[0]) == set(status) and status["last_run"] is not None
        report = h.quota()
        _fits(report, QuotaReport, "quota")
        assert report["total"]["requests"] == 4
    make_job(sim, n=6, quota=quota)         # the prompts change: a new plan, the old one's answers earlier
    with Harvester.from_file(job) as h:
        est = h.estimate()
        _fits(est, Estimate, "estimate")
        assert est["expected"] is not None and est["earlier"] is not None
