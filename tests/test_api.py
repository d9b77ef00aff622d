"""The Python API, in process, against the real simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import datasets

import harvester
from harvester import Harvester
from harvester.config import job_from_dict


def test_public_api_is_pinned() -> None:
    assert sorted(harvester.__all__) == sorted([
        "__version__", "Harvester", "RunResult", "PlanSummary", "Job", "Teacher", "Limits", "PromptSet",
        "load_job", "HarvesterError", "ConfigError", "PromptSourceError", "StoreError", "TermsRefused",
        "QuotaExceeded", "Interrupted", "TeacherError", "RetryableError", "PermanentError", "FatalError"])
    for name in harvester.__all__:
        assert getattr(harvester, name) is not None


def test_run_status_export_from_code(sim, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text('template: "Define {w}."\nvariables: {w: [alpha, beta, gamma, delta]}\n')
    job = job_from_dict({"name": "api", "teacher": {"base_url": sim.url, "model": "sim-teacher",
                                                    "api_key_env": None, "params": {"max_tokens": 400}},
                         "prompts": [{"path": "p.yaml", "samples": 2}]}, base=tmp_path)
    h = Harvester(job)
    result = h.run_sync(handle_signals=False)
    assert result.reason == "done" and result.exit_code == 0
    assert (result.sent, result.answered, result.failed) == (8, 8, 0)
    s = h.status()
    assert s["done"] == 8 and s["jobs"] == 8
    # The simulator answers the two samples of one prompt differently: both are kept.
    splits = h.export()
    assert isinstance(splits, datasets.DatasetDict) and list(splits) == ["train"]
    ds = splits["train"]
    assert len(ds) == 8
    assert "exact_duplicate" not in h.last_export.dropped
    assert ds[0]["messages"][-1]["role"] == "assistant"
    assert (tmp_path / "data" / "api" / "train.jsonl").exists()
    again = asyncio.run(h.run(handle_signals=False))
    assert again.sent == 0 and sim.stats()["requests"] == 8
    h.close()
