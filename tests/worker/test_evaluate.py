"""Evaluation: report shape, KL properties, action exact match against real greedy decoding, plots, and the
`evaluate` job's permanent errors (nothing to score, a model that cannot be loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contract.job_config import EvaluateConfig
from tests.worker.test_recipe import make_config, make_record
from worker.context import BadJobInput, ModelLoadError, is_permanent
from worker.training.evaluate import evaluate_examples, make_report, run_evaluation
from worker.training.plots import plot_metrics
from worker.training.render import ACTION, RenderedExample, render_trajectory
from worker.training.trainer import run_training


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _as_eval(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "id": record["id"] + "-eval", "split": "eval"}


@pytest.fixture(scope="module")
def overfit_run(chatml_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A student trained until it memorises 2 trajectories, evaluated on the same trajectories."""
    out = tmp_path_factory.mktemp("overfit")
    train = [make_record(0), make_record(1)]
    cfg = make_config(
        chatml_model_dir,
        training={
            "max_steps": 60,
            "micro_batch_size": 2,
            "lr": 1e-2,
            "min_lr_ratio": 0.5,
            "eval_max_examples": 10,
            "max_seq_len": 192,
            "eval_every": 30,
        },
    )
    result = run_training(cfg, train + [_as_eval(r) for r in train], out)
    return out, result


def _examples(model_dir: Path, records: list[dict[str, Any]]) -> tuple[Any, list[RenderedExample]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rendered = [render_trajectory(r["messages"], r["spans"], tok, max_seq_len=192) for r in records]
    return tok, [e for e in rendered if e is not None]


def test_report_before_after_delta(overfit_run: tuple[Path, Any]) -> None:
    out, result = overfit_run
    report = json.loads((out / "eval_report.json").read_text())
    assert report == result.eval_report
    assert set(report) == {"before", "after", "delta"}
    for phase in ("before", "after"):
        assert set(report[phase]["reason"]) == {"tokens", "nll", "accuracy"}
        assert set(report[phase]["action"]) == {"tokens", "nll", "accuracy", "spans", "exact_match"}
        assert report[phase]["action"]["spans"] == 4  # 2 assistant turns × 2 trajectories
    assert report["delta"]["action"]["nll"] == pytest.approx(
        report["after"]["action"]["nll"] - report["before"]["action"]["nll"]
    )
    assert report["after"]["reason"]["nll"] < report["before"]["reason"]["nll"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    periodic = [r for r in rows if "eval" in r]
    assert [r["step"] for r in periodic] == [30]  # eval_every (the final step is covered by "after")
    assert periodic[0]["eval"]["action"]["nll"] < report["before"]["action"]["nll"]


def test_overfit_model_matches_every_action_exactly(overfit_run: tuple[Path, Any]) -> None:
    report = overfit_run[1].eval_report
    assert report["before"]["action"]["exact_match"] == 0.0
    assert report["after"]["action"]["exact_match"] == 1.0
    assert report["after"]["action"]["accuracy"] == 1.0


@pytest.mark.parametrize("which", ["initial", "overfit"])
def test_exact_match_equals_real_greedy_decoding(
    which: str, chatml_model_dir: Path, overfit_run: tuple[Path, Any]
) -> None:
    """The one-pass metric agrees with model.generate(greedy) span by span."""
    from transformers import AutoModelForCausalLM

    model_dir = chatml_model_dir if which == "initial" else overfit_run[0] / "final"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok, examples = _examples(model_dir, [make_record(0), make_record(1), make_record(2)])
    matched = seen = 0
    for ex in examples:
        kinds = ex.kinds
        t = 1
        while t < len(kinds):
            if kinds[t] != ACTION:
                t += 1
                continue
            end = t
            while end < len(kinds) and kinds[end] == ACTION:
                end += 1
            prefix = torch.tensor([ex.input_ids[:t]])
            out = model.generate(
                prefix,
                attention_mask=torch.ones_like(prefix),
                max_new_tokens=end - t,
                min_new_tokens=end - t,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            matched += int(out[0, t:].tolist() == ex.input_ids[t:end])
            seen += 1
            t = end
    metrics = evaluate_examples(model, examples, batch_size=2, vocab_size=len(tok), pad_id=tok.pad_token_id)
    assert metrics["action"]["spans"] == seen
    assert metrics["action"]["exact_match"] == pytest.approx(matched / seen)


def test_kl_to_itself_is_zero_and_limits_apply(chatml_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(chatml_model_dir)
    tok, examples = _examples(chatml_model_dir, [make_record(i) for i in range(3)])
    metrics = evaluate_examples(
        model, examples, teacher=model, batch_size=2, chunk_size=7, vocab_size=len(tok), exact_match_max=3
    )
    assert metrics["reason"]["kl_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["action"]["spans"] == 3
    assert metrics["reason"]["tokens"] == sum(e.kinds[1:].count(1) for e in examples)


def test_make_report_without_before() -> None:
    after = {"examples": 1, "action": {"nll": 1.0}}
    assert make_report(None, after) == {"before": None, "after": after, "delta": None}


def test_evaluate_job_writes_its_report(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = [make_record(0), _as_eval(make_record(1)), _as_eval(make_record(2))]
    cfg = EvaluateConfig(student_model=str(chatml_model_dir), max_seq_len=192, resources={"device": "cpu"})
    report = run_evaluation(cfg, records, tmp_path)
    assert json.loads((tmp_path / "eval_report.json").read_text()) == report
    assert report["metrics"]["examples"] == 2 and report["split"] == "eval"


def test_evaluate_job_errors_are_permanent(chatml_model_dir: Path, tmp_path: Path) -> None:
    only_train = [make_record(0), make_record(1)]
    cfg = EvaluateConfig(student_model=str(chatml_model_dir), max_seq_len=192, resources={"device": "cpu"})
    with pytest.raises(BadJobInput, match="nothing to score: no usable example in the 'eval' split") as empty:
        run_evaluation(cfg, only_train, tmp_path)
    missing = cfg.model_copy(update={"student_model": str(tmp_path / "gone")})
    with pytest.raises(ModelLoadError, match="gone") as unloadable:
        run_evaluation(missing, [_as_eval(r) for r in only_train], tmp_path)
    assert is_permanent(empty.value) and is_permanent(unloadable.value)
    assert not (tmp_path / "eval_report.json").exists()


def test_plot_is_a_png(overfit_run: tuple[Path, Any], tmp_path: Path) -> None:
    out = plot_metrics(overfit_run[0] / "metrics.jsonl", tmp_path / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (600, 800)
    assert (overfit_run[0] / "loss_curves.png").exists()
