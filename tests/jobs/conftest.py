"""Fixtures for the jobs tests: tiny models under a models root, synthetic datasets made through the
API, and settings pointing the API and in-process workers at them.

Models (built once per session, no downloads): ``student`` and ``teacher`` share a tokenizer (same
corpus; the teacher is wider), ``stranger`` has a tokenizer trained on other text, ``slow`` is a
wider student whose steps take long enough for a test to catch a run in the middle, ``broken`` holds
a tokenizer but no weights.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CPU_TRAINING = {"max_seq_len": 384, "micro_batch_size": 2, "lr": 1e-3, "eval_max_examples": 4,
                "action_exact_match_max": 4}


def synthetic_payloads(n: int, seed: int = 0, tag: str = "") -> list[dict[str, Any]]:
    """POST /v1/trajectories bodies of the scripted teacher (source "synthetic"); ``tag`` keeps external ids apart."""
    from worker.synthetic import generate_problems, teacher_trajectories

    payloads = teacher_trajectories(generate_problems(n, seed=seed, split="train", max_items=2), "openai")
    for p in payloads:
        p["external_id"] += tag
    return payloads


def _corpus() -> list[str]:
    from worker.synthetic import dataset_records, generate_problems

    records = dataset_records(generate_problems(40, seed=7, split="train", max_items=2), "openai")
    return ["".join(f"<|im_start|>{m['role']}\n{m['text']}<|im_end|>\n" for m in r["messages"]) for r in records]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    root = tmp_path_factory.mktemp("models")
    corpus = _corpus()
    build_tiny_model(root / "student", corpus, chat_template=CHATML_TEMPLATE, seed=0)
    build_tiny_model(root / "teacher", corpus, hidden_size=96, chat_template=CHATML_TEMPLATE, seed=1)
    build_tiny_model(root / "stranger", ["Completely different words: zebra quartz fjord."] * 20, seed=2)
    build_tiny_model(root / "slow", corpus, hidden_size=256, num_layers=4, intermediate_size=768,
                     chat_template=CHATML_TEMPLATE, seed=3)
    (root / "broken").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "student" / name, root / "broken" / name)
    return root


@pytest.fixture
def jobs_settings(settings, models_root: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The session settings with a models root, and the database URL that in-process workers read datasets from."""
    monkeypatch.setattr(settings, "models_root", models_root)
    monkeypatch.setattr(settings, "database_url", database_url)
    return settings


@pytest.fixture
def committed(committed_client, jobs_settings, database):  # type: ignore[no-untyped-def]
    """A client whose requests commit (workers and SSE need that); jobs tables truncated afterwards."""
    yield committed_client
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def pick_seed(ids: list[str], eval_fraction: float, want: Callable[[list[str]], bool]) -> int:
    """A split seed whose split of ``ids`` satisfies ``want`` (the split is a seeded hash of the ids)."""
    from app.datasets.split import split_of

    for seed in range(10_000):
        if want([split_of(uuid.UUID(i), seed, eval_fraction) for i in ids]):
            return seed
    raise AssertionError("no seed gives the wanted split")


def make_dataset(client: Any, n: int = 6, *, tag: str | None = None, eval_fraction: float = 0.2,
                 want: Callable[[list[str]], bool] | None = None) -> dict[str, Any]:
    """Ingest ``n`` synthetic trajectories, approve them, and freeze them into a dataset (all via HTTP).

    ``want`` picks the split (default: at least one eval item and two train items)."""
    tag = tag if tag is not None else f"-{uuid.uuid4().hex[:6]}"
    r = client.post("/v1/trajectories/batch", json={"items": synthetic_payloads(n, tag=tag)})
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    ids = [item["id"] for item in r.json()["items"]]
    r = client.post("/v1/trajectories/review/bulk", json={"action": "approve", "filter": {"source": "synthetic"}})
    assert r.status_code == 200, r.text
    want = want or (lambda s: s.count("eval") >= 1 and s.count("train") >= 2)
    seed = pick_seed(ids, eval_fraction, want)
    r = client.post("/v1/datasets", json={"name": f"synthetic{tag}", "filter": {"source": "synthetic"},
                                          "eval_fraction": eval_fraction, "seed": seed})
    assert r.status_code == 201, r.text
    return r.json()


def distill_spec(dataset_id: str, model: str = "student", **overrides: Any) -> dict[str, Any]:
    training = {**CPU_TRAINING, "max_steps": 3, "checkpoint_every": 0, **overrides.pop("training", {})}
    return {"kind": "distill", "dataset_id": dataset_id, "student_model": model, "training": training,
            "resources": {"device": "cpu"}, **overrides}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def clean_jobs(database) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))
