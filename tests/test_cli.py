"""The ``distillery`` command line against a real database and a tiny tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.app.payloads import openai

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if database_url:
        env["DISTILLERY_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_db_upgrade_and_keys(database_url):
    out = _cli("db", "upgrade", database_url=database_url)
    assert out.returncode == 0, out.stderr
    out = _cli("keys", "create", "--name", "cli-agent", "--scopes", "ingest,annotate", database_url=database_url)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["key"].startswith("dk_") and created["scopes"] == ["annotate", "ingest"]
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT key_hash, scopes FROM api_keys WHERE id = :id"),
                              {"id": created["id"]}).one()
    assert stored.key_hash != created["key"] and len(stored.key_hash) == 64
    listed = _cli("keys", "list", database_url=database_url)
    assert "cli-agent" in listed.stdout and created["key"] not in listed.stdout
    assert _cli("keys", "revoke", created["id"], database_url=database_url).returncode == 0
    assert "revoked" in _cli("keys", "list", database_url=database_url).stdout
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM api_keys WHERE id = :id"), {"id": created["id"]})
    engine.dispose()
    bad = _cli("keys", "create", "--name", "x", "--scopes", "root", database_url=database_url)
    assert bad.returncode == 2 and "unknown scopes: root" in bad.stderr


def test_masks_show_from_a_request_body(tmp_path):
    from worker.training.tiny import build_tiny_model

    body = openai("masks")
    corpus = [m["content"] or "" for m in body["messages"]] * 10
    model_dir = build_tiny_model(tmp_path / "tok", corpus)
    payload = tmp_path / "trajectory.json"
    payload.write_text(json.dumps(body))
    out = _cli("masks", "show", "--file", str(payload), "--tokenizer", str(model_dir), "--no-color")
    assert out.returncode == 0, out.stderr
    assert "⟦A:" in out.stdout and "⟦R:" in out.stdout and "get_weather" in out.stdout
    assert "21°C" in out.stdout
    # the observation and the user turn are context, never inside a marked run
    for run in out.stdout.split("⟦")[1:]:
        assert "temp_c" not in run.split("⟧")[0] and "Weather in NYC" not in run.split("⟧")[0]
    usage = _cli("masks", "show", "--tokenizer", str(model_dir))
    assert usage.returncode == 2
