"""Shared helpers for the dataset tests: ingest and approve trajectories, clone one trajectory many
times with SQL (fast bulk fixtures), create datasets, run SQL in the test's transaction."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient

from tests.annotations.helpers import PROBLEM, ingest, sql
from tests.app.payloads import openai

__all__ = ["PROBLEM", "approve", "clone", "create", "ingest", "ingest_approved", "openai", "sha256", "sql"]


def sha256(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def approve(client: TestClient, tid: str) -> None:
    r = client.post(f"/v1/trajectories/{tid}/review", json={"action": "approve"})
    assert r.status_code == 200, r.text


def ingest_approved(client: TestClient, external_id: str, **overrides: Any) -> str:
    tid = ingest(client, external_id, **overrides)
    approve(client, tid)
    return tid


def create(client: TestClient, name: str = "ds", **body: Any) -> Any:
    """POST /v1/datasets; the response (not asserted)."""
    return client.post("/v1/datasets", json={"name": name, **body})


def clone(app: Any, tid: str, n: int, *, prefix: str = "clone", status: str = "approved",
          same_content: bool = False, score_step: float = 0.0) -> None:
    """Insert ``n`` copies of trajectory ``tid`` (and its current span revision) in one statement each:
    new ids, external ids ``{prefix}-{i}``, created one millisecond apart, distinct content hashes
    unless ``same_content``, complexity_score = the original's + i * ``score_step``."""
    sql(app, """
        INSERT INTO trajectories (id, source, external_id, format, teacher_model, task, task_type, outcome, reward,
            tags, metadata, messages, tools, raw, content_sha256, request_sha256, complexity, complexity_score,
            n_messages, status, span_revision, created_at, updated_at)
        SELECT gen_random_uuid(), t.source, :prefix || '-' || g, t.format, t.teacher_model, t.task || ' #' || g,
            t.task_type, t.outcome, t.reward, t.tags, t.metadata, t.messages, t.tools, t.raw,
            CASE WHEN :same THEN t.content_sha256 ELSE encode(sha256(convert_to(:prefix || g, 'UTF8')), 'hex') END,
            t.request_sha256, t.complexity, t.complexity_score + g * :step, t.n_messages, :status, 1,
            t.created_at + g * interval '1 millisecond', now()
        FROM trajectories t, generate_series(1, :n) g WHERE t.id = :tid
    """, tid=tid, n=n, prefix=prefix, status=status, same=same_content, step=score_step)
    sql(app, """
        INSERT INTO span_revisions (trajectory_id, revision, spans, source)
        SELECT c.id, 1, r.spans, 'auto'
        FROM trajectories c
        JOIN trajectories t ON t.id = :tid
        JOIN span_revisions r ON r.trajectory_id = t.id AND r.revision = t.span_revision
        WHERE c.source = t.source AND c.external_id LIKE :prefix || '-%'
    """, tid=tid, prefix=prefix)
