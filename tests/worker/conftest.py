"""Shared worker fixtures: tiny Llama models with tokenizers trained on the fly (no downloads).

`tiny_model_dir` has no chat template (the renderer's plain template applies), `chatml_model_dir`
uses CHATML_TEMPLATE, `padded_teacher_dir` has the same tokenizer as `tiny_model_dir` but an
embedding matrix with 8 extra rows (like Qwen2.5 7B vs 0.5B). `plain_tok` / `chatml_tok` are their
tokenizers, and `tok` runs a test once with each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CORPUS: list[str] = [
    "You are a helpful agent. Use the tools to answer the question.",
    "What is the population of Paris? Find the capital of France.",
    "Thought: I need to search for the population.\nAction: search[Paris population]",
    "Observation: Paris has 2.1 million inhabitants.",
    "Thought: I know the answer now.\nAction: finish[2.1 million]",
    '<tool_call>\n{"name": "search", "arguments": {"query": "Paris population"}}\n</tool_call>',
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 * 7"}}\n</tool_call>',
    "<think>\nThe user wants the weather, so I should call the weather tool.\n</think>\n",
    "Code:\n```py\nprint(wiki(query=\"Paris population\"))\n```<end_code>",
    "Call id: call_1\nObservation:\nExecution logs:\n2.1 million",
    "The answer is 21 degrees. It is sunny in New York today.",
    "naïve café 🎉!! 🎉!! 🎉!! résumé",
] * 8


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain"), TINY_CORPUS, seed=0)


@pytest.fixture(scope="session")
def chatml_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-chatml"), TINY_CORPUS, chat_template=CHATML_TEMPLATE, seed=0
    )


@pytest.fixture(scope="session")
def padded_teacher_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    from worker.training.tiny import build_tiny_model

    n = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-teacher"), TINY_CORPUS, hidden_size=96, num_heads=4, seed=1,
        embedding_rows=n + 8,
    )


@pytest.fixture(scope="session")
def plain_tok(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def chatml_tok(chatml_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chatml_model_dir)


@pytest.fixture(params=["plain", "chatml"])
def tok(request: pytest.FixtureRequest, plain_tok: Any, chatml_tok: Any) -> Any:
    return plain_tok if request.param == "plain" else chatml_tok


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny models run ~10× faster single-threaded on a shared 2-core box than with 2 threads."""
    import torch

    torch.set_num_threads(1)
