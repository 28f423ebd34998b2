"""Mask preview: run markup, legend and counts."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from worker.training.masks_view import format_masks
from worker.training.render import render_trajectory


def example(model_dir: Path):  # type: ignore[no-untyped-def]
    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "text": "Find x"},
                {"role": "assistant", "text": "Thought: search.\nAction: search[x]"},
                {"role": "tool", "text": "Observation: x is 5"}]
    spans = [{"message": 1, "start": 0, "end": 17, "kind": "reason"},
             {"message": 1, "start": 17, "end": 34, "kind": "action"},
             {"message": 2, "start": 0, "end": 19, "kind": "observation"}]
    ex = render_trajectory(messages, spans, tok, max_seq_len=512, example_id="traj-1")
    assert ex is not None
    return ex, tok


def test_bracket_markup(chatml_model_dir: Path) -> None:
    ex, tok = example(chatml_model_dir)
    text = format_masks(ex, tok, color=False)
    assert "⟦R:Thought: search.\n⟧⟦A:Action: search[x]<|im_end|>⟧\n<|im_start|>tool\nObservation: x is 5" in text
    assert text.startswith("example traj-1\n<|im_start|>user\nFind x")
    assert f"reason {ex.n_reason} · ⟦A:…⟧ action {ex.n_action}" in text
    assert f"total {len(ex.input_ids)} tokens" in text and "\x1b[" not in text


def test_ansi_colours(tiny_model_dir: Path) -> None:
    ex, tok = example(tiny_model_dir)
    text = format_masks(ex, tok)
    assert "\x1b[34mThought: search.\n\x1b[0m" in text
    assert "\x1b[32mAction: search[x]</s>\x1b[0m" in text
    assert "\x1b[2m" in text and "⟦" not in text
