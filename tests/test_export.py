"""The export pipeline end to end: a real store, every format, every file read back."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from openai_rows import validate_openai_row

from harvester import Harvester
from harvester.config import job_from_dict
from harvester.export.source import StoreSource
from harvester.prompts import plan
from harvester.store import AnswerRow

ANSWERS = {
    "good": "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts "
            "of plant cells, storing the energy of sunlight in chemical bonds.",
    "refusal": "As an AI language model, I cannot assist with that request.",
    "placeholder": "<noinput>",
    "repeat": "the same words again " * 40,
}


def fill_store(tmp_path: Path, rows: list[tuple[str, str, str | None]], **export: object) -> Harvester:
    """A job whose store holds `rows` of (prompt, answer, finish_reason): its prompt file is written and
    planned, and the answers are loaded through the store's API."""
    with (tmp_path / "prompts.jsonl").open("w") as f:
        for prompt, _, _ in rows:
            f.write(json.dumps({"system": "Be helpful.", "prompt": prompt}) + "\n")
    job = job_from_dict({"name": "ex", "teacher": {"model": "m", "api_key_env": None},
                         "prompts": [{"path": "prompts.jsonl"}], "export": export}, base=tmp_path)
    h = Harvester(job)
    h.plan()
    specs = list(plan(job))
    assert len({s.id for s in specs}) == len(rows), "fill_store: prompts must differ"
    h.store.record([], [AnswerRow(s.id, 1, "m", answer, finish or "stop", 10, 20, 0.1, None)
                        for s, (_, answer, finish) in zip(specs, rows)], [])
    return h


def corpus() -> list[tuple[str, str, str | None]]:
    rows = [(f"Question {i} about topic {i * 37 % 101}?",
             f"Answer {i}: " + " ".join(f"word{i * 31 + k}" for k in range(30)), None) for i in range(60)]
    rows.append(("Explain photosynthesis.", ANSWERS["good"], None))
    rows.append(("Explain photosynthesis briefly.", ANSWERS["good"] + " Indeed.", None))  # near-dup, J = 23/24
    rows.append(("explain photosynthesis.", ANSWERS["good"].upper(), None))                             # exact dup
    rows.append(("Tell me a secret.", ANSWERS["refusal"], None))
    rows.append(("Say nothing.", ANSWERS["placeholder"], None))
    rows.append(("Loop.", ANSWERS["repeat"], None))
    rows.append(("Cut off.", "This answer stops in the mid", "length"))
    return rows


@pytest.mark.parametrize("fmt", ["openai", "alpaca", "sharegpt", "trl"])
def test_every_format_round_trips(tmp_path: Path, fmt: str) -> None:
    h = fill_store(tmp_path, corpus(), format=fmt, test_size=0.2, shard_rows=20)
    splits = h.export()
    out = tmp_path / "data" / "ex"
    report = h.last_export
    kept = report.rows["train"] + report.rows["test"]
    assert kept == 60 + 1  # the 60 plain rows and one photosynthesis answer survive
    assert {k: len(v) for k, v in splits.items()} == report.rows
    for split in ("train", "test"):
        jsonl = datasets.load_dataset("json", data_files=str(out / f"{split}.jsonl"), split="train")
        shards = sorted((out / "parquet").glob(f"{split}-*.parquet"))
        parquet = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
        assert len(jsonl) == len(parquet) == report.rows[split]
        assert all(pq.ParquetFile(p).metadata.row_group(0).column(0).compression == "ZSTD" for p in shards)
        # openai JSONL rows carry only what OpenAI's fine-tuning accepts; the join columns are in Parquet
        extra = ["id", "metadata"] if fmt == "openai" else []
        assert jsonl.column_names + extra == parquet.column_names
    assert len(sorted((out / "parquet").glob("train-*-of-*.parquet"))) >= 2  # shard_rows=20
    hf = datasets.load_from_disk(str(out / "hf"))
    assert {k: len(v) for k, v in hf.items()} == report.rows
    info = json.loads((out / "dataset_info.json").read_text()) if (out / "dataset_info.json").exists() else None
    assert (info is None) == (fmt == "trl")
    if info:
        assert info["ex"]["file_name"] == "train.jsonl" and info["ex_test"]["file_name"] == "test.jsonl"


def test_openai_rows_pass_the_validator_and_drops_are_explained(tmp_path: Path) -> None:
    h = fill_store(tmp_path, corpus())
    h.export()
    out = tmp_path / "data" / "ex"
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows and all(validate_openai_row(r) == [] for r in rows)
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == sorted(["exact_duplicate", "near_duplicate", "refusal", "placeholder", "repetition_ngram",
                              "truncated"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["selected"] == 67 and sum(stats["dropped"].values()) == 6 and stats["near_dup_clusters"] == 1
    assert [s["step"] for s in stats["steps"]] == ["quality filters", "exact dedup", "near-duplicate removal"]


def test_card_has_hub_metadata_and_provenance(tmp_path: Path) -> None:
    h = fill_store(tmp_path, corpus(), test_size=0.2)
    h.export()
    card = (tmp_path / "data" / "ex" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"][0]["data_files"] == [{"split": "test", "path": "parquet/test-*.parquet"},
                                                 {"split": "train", "path": "parquet/train-*.parquet"}]
    assert "distillation" in front["tags"]
    for words in ("model requested: `m`", "| train |", "refusal: 1", "near_duplicate: 1",
                  "information, not legal advice", "prompt + 1,220 completion tokens"):
        assert words in card, words


def test_split_is_stable_and_one_sample_per_prompt(tmp_path: Path) -> None:
    h = fill_store(tmp_path, corpus(), test_size=0.3)
    h.export()
    first = (tmp_path / "data" / "ex" / "test.jsonl").read_text()
    h.export()
    assert (tmp_path / "data" / "ex" / "test.jsonl").read_text() == first


def test_decontamination_drops_rows_sharing_an_eval_ngram(tmp_path: Path) -> None:
    words = " ".join(f"word{5 * 31 + k}" for k in range(30))  # the answer of row 5
    (tmp_path / "evals.jsonl").write_text(json.dumps({"question": "unrelated words " * 3 + words[:120]}) + "\n")
    # an n-gram crossing from the prompt into the answer of row 7
    crossing = "about topic " + str(7 * 37 % 101) + "? Answer 7: " + " ".join(f"word{7 * 31 + k}" for k in range(9))
    (tmp_path / "bench.parquet").parent.mkdir(exist_ok=True)
    import pyarrow as pa
    pq.write_table(pa.table({"text": [crossing], "n": [1]}), tmp_path / "bench.parquet")
    h = fill_store(tmp_path, corpus(), decontaminate={"evals": ["evals.jsonl", "bench.parquet"], "ngram": 13})
    h.export()
    report = h.last_export
    assert report.decontamination == {"evals": 1, "bench": 1}
    rejected = [json.loads(x) for x in (tmp_path / "data" / "ex" / "rejected.jsonl").read_text().splitlines()]
    assert {r["seq"] for r in rejected if r["reason"].startswith("contaminated")} == {5, 7}


def test_filters_and_dedup_can_be_switched_off(tmp_path: Path) -> None:
    h = fill_store(tmp_path, corpus(), filters={"enabled": False}, dedup=False)
    h.export()
    assert h.last_export.rows["train"] == 67 and not h.last_export.dropped and not h.last_export.steps


@pytest.mark.parametrize("start", ["default", "spawn"])
def test_worker_processes_write_the_same_files_as_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              start: str) -> None:
    # duplicates whose first copy sits in another slice than the copy to drop
    rows = corpus()
    rows += [(rows[i][0].upper(), rows[i][1], None) for i in range(0, 60, 7)]                 # exact
    rows += [(f"Close {i}?", rows[i][1] + " Indeed so.", None) for i in range(3, 60, 11)]     # near
    words = " ".join(f"word{9 * 31 + k}" for k in range(30))
    (tmp_path / "evals.jsonl").write_text(json.dumps({"q": words}) + "\n")
    settings = {"test_size": 0.25, "decontaminate": {"evals": ["evals.jsonl"]}}
    one = fill_store(tmp_path, rows, **settings)
    one.export(out=tmp_path / "one")
    assert one.last_export.workers == 1                                # small: no processes by default
    many = Harvester(job_from_dict({"name": "ex", "teacher": {"model": "m", "api_key_env": None},
                                    "prompts": [{"path": "prompts.jsonl"}],
                                    "export": {**settings, "workers": 3}}, base=tmp_path))
    if start == "spawn":   # what a process with threads gets (fork is only used without them)
        monkeypatch.setattr("harvester.export.pipeline.start_method", lambda: "spawn")
    many.export(out=tmp_path / "many")
    assert many.last_export.workers == 3
    dropped = many.last_export.dropped
    assert dropped["exact_duplicate"] == 1 + 9 and dropped["near_duplicate"] == 1 + 6
    assert dropped["contaminated:evals"] == 1
    for name in ("train.jsonl", "test.jsonl", "rejected.jsonl", "dataset_info.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("one", "many")]
    assert stats[0].pop("out") != stats[1].pop("out") and stats[0] == stats[1]


def _opened_in_child(source: StoreSource) -> tuple[bool, int]:
    inherited = source.store
    store = source._open()
    return store is not inherited, sum(1 for _ in source.records())


def test_a_forked_worker_opens_the_store_afresh_instead_of_using_its_parents_connection(tmp_path: Path) -> None:
    import multiprocessing

    h = fill_store(tmp_path, corpus())
    source = StoreSource(h.store.url, h.plan_key(), "all", h.store)
    assert sum(1 for _ in source.records()) == len(corpus())          # the parent's connection is in use
    with multiprocessing.get_context("fork").Pool(1) as pool:
        fresh, rows = pool.apply(_opened_in_child, (source,))
    assert fresh and rows == len(corpus())
    assert source._open() is h.store                                   # the parent keeps its own


def test_filter_settings_of_the_job_file_are_the_filters_own() -> None:
    from harvester.config import Export
    from harvester.export.filters import DEFAULT_REFUSAL_PHRASES, FilterConfig
    from harvester.export.pipeline import filter_config
    assert filter_config(Export()) == FilterConfig()                 # the same defaults on both sides
    cfg = filter_config(Export.model_validate({"filters": {
        "min_tokens": None, "max_repeated_share": 0.3, "extra_refusal_phrases": ["no way"], "prompt_echo": False}}))
    assert (cfg.min_tokens, cfg.max_rep_share, cfg.extra_refusal_phrases, cfg.prompt_echo) == (
        None, 0.3, ("no way",), False)
    assert cfg.refusal_phrases == DEFAULT_REFUSAL_PHRASES
    assert filter_config(Export.model_validate({"filters": {"refusal_phrases": ["x y"]}})).refusal_phrases == ("x y",)
