"""The ``distillery`` command line (``cli/``) against a real database and a tiny tokenizer, each command in a
subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

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
    bound = _cli("keys", "create", "--name", "agent-a", "--scopes", "ingest", "--sources", "agent-a,agent-b",
                 database_url=database_url)
    assert bound.returncode == 0, bound.stderr
    created = json.loads(bound.stdout)
    assert created["sources"] == ["agent-a", "agent-b"] and created["scopes"] == ["ingest"]
    engine = create_engine(database_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT sources FROM api_keys WHERE id = :id"),
                            {"id": created["id"]}).scalar_one() == ["agent-a", "agent-b"]
        conn.execute(text("DELETE FROM api_keys WHERE id = :id"), {"id": created["id"]})
    engine.dispose()


def _tokenizer(tmp_path: Path, body: dict[str, Any]) -> Path:
    from worker.training.tiny import build_tiny_model

    corpus = [m["content"] or "" for m in body["messages"]] * 10
    return build_tiny_model(tmp_path / "tok", corpus)


def test_masks_show_from_a_request_body(tmp_path):
    body = openai("masks")
    model_dir = _tokenizer(tmp_path, body)
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
    assert "exactly one of --id or --file" in usage.stderr
    both = _cli("masks", "show", "--tokenizer", str(model_dir), "--file", str(payload), "--id", str(uuid.uuid4()))
    assert both.returncode == 2 and "exactly one of --id or --file" in both.stderr


def test_masks_show_a_stored_trajectory_as_its_request_body_shows(committed_client, database_url, tmp_path):
    """``--id`` reads the stored canonical messages and current spans: the same marks as the body it came from."""
    body = openai("masks-stored")
    model_dir = _tokenizer(tmp_path, body)
    created = committed_client.post("/v1/trajectories", json=body)
    assert created.status_code == 201, created.text
    payload = tmp_path / "trajectory.json"
    payload.write_text(json.dumps(body))
    from_file = _cli("masks", "show", "--file", str(payload), "--tokenizer", str(model_dir), "--no-color")
    stored = _cli("masks", "show", "--id", created.json()["id"], "--tokenizer", str(model_dir), "--no-color",
                  database_url=database_url)
    assert stored.returncode == 0, stored.stderr
    assert "⟦A:" in stored.stdout and stored.stdout == from_file.stdout
    read = committed_client.get(f"/v1/trajectories/{created.json()['id']}").json()
    record = tmp_path / "record.json"  # a dataset record: canonical messages and spans, no format
    record.write_text(json.dumps({k: read[k] for k in ("messages", "spans", "tools")}))
    from_record = _cli("masks", "show", "--file", str(record), "--tokenizer", str(model_dir), "--no-color")
    assert from_record.returncode == 0, from_record.stderr
    assert from_record.stdout == stored.stdout
    missing = _cli("masks", "show", "--id", str(uuid.uuid4()), "--tokenizer", str(model_dir),
                   database_url=database_url)
    assert missing.returncode != 0 and "no trajectory" in missing.stderr


def test_help_loads_neither_the_database_layer_nor_torch():
    """``distillery --help`` and the HTTP-only ``jobs`` commands stay light: every heavy import is lazy."""
    code = ("import sys, cli.main\n"
            "heavy = ('sqlalchemy', 'torch', 'transformers', 'fastapi', 'app', 'worker')\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    helped = _cli("--help")
    assert helped.returncode == 0
    for group in ("serve", "worker", "db", "keys", "masks", "jobs", "datasets", "models", "demo"):
        assert group in helped.stdout


def test_models_list_loads_no_torch(tmp_path):
    """Listing the models root reads config.json files and safetensors headers: no torch, no transformers."""
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from cli.main import cli\n"
            "result = CliRunner().invoke(cli, ['models', 'list', '--json'])\n"
            "print(result.exit_code, [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(tmp_path)}
    env.pop("DISTILLERY_MODELS_ROOT", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 []"
