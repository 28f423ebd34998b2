"""The offline teacher signal on the worker: the top-k + tail estimator's properties, the storage format and its
quantization error, the chunked loss path against the full-vocabulary KL on a tiny model, resumable captures,
and an offline distill run trained from a capture."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contract.capture import shard_name
from contract.job_config import CaptureConfig
from tests.worker.test_recipe import make_config, make_records
from worker.context import BadJobInput
from worker.training.capture import run_capture
from worker.training.data import prepare_examples
from worker.training.losses import _kl_rows, compute_span_losses, topk_kl_rows
from worker.training.models import load_teacher, load_tokenizers
from worker.training.render import collate
from worker.training.topk import OfflineSignal, decode, encode, top_k_signal
from worker.training.trainer import run_training


def _logits(n: int, v: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * scale


def _signal(t_logits: torch.Tensor, k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    ids, logp, tail = top_k_signal(t_logits, k, temperature)
    return ids, torch.cat([logp, tail[:, None]], dim=1)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_estimator_is_zero_when_the_student_is_the_teacher(temperature: float) -> None:
    t = _logits(6, 50, 0)
    ids, logp = _signal(t, 8, temperature)
    assert torch.allclose(topk_kl_rows(t, ids, logp, temperature), torch.zeros(6), atol=1e-5)
    s = _logits(6, 50, 1)
    assert (topk_kl_rows(s, ids, logp, temperature) > 1e-3).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_estimator_equals_the_full_kl_when_k_covers_the_vocabulary(temperature: float) -> None:
    s, t = _logits(5, 40, 2), _logits(5, 40, 3)
    ids, logp = _signal(t, 40, temperature)
    assert torch.isneginf(logp[:, -1]).all()  # nothing left outside the top-k
    torch.testing.assert_close(topk_kl_rows(s, ids, logp, temperature), _kl_rows(s, t, temperature))


def test_estimator_lies_between_zero_and_the_full_kl_and_grows_with_k() -> None:
    s, t = _logits(20, 64, 4), _logits(20, 64, 5)
    full = _kl_rows(s, t, 1.0)
    previous = torch.zeros(20)
    for k in (1, 4, 16, 63, 64):
        kl_k = topk_kl_rows(s, *_signal(t, k), 1.0)
        assert (kl_k >= -1e-6).all() and (kl_k <= full + 1e-5).all()
        assert (kl_k >= previous - 1e-5).all()  # a finer partition never loses divergence
        previous = kl_k
    torch.testing.assert_close(previous, full)


def test_gradient_flows_only_to_the_student_and_stays_finite_at_full_k() -> None:
    s = _logits(4, 30, 6).requires_grad_(True)
    t_logp_leaf = _signal(_logits(4, 30, 7), 30)[1].clone().requires_grad_(True)
    ids = _signal(_logits(4, 30, 7), 30)[0]
    topk_kl_rows(s, ids, t_logp_leaf, 1.0).sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t_logp_leaf.grad is None
    # The gradient of the full-k estimator is that of the full KL: softmax(s) − softmax(t) per row.
    expected = F.softmax(s.detach(), -1) - F.softmax(_logits(4, 30, 7), -1)
    torch.testing.assert_close(s.grad, expected, atol=1e-5, rtol=1e-4)


def test_quantization_round_trip_error_is_half_a_step() -> None:
    t = _logits(200, 1000, 8, scale=4.0)
    ids, logp, tail = top_k_signal(t, 32, 1.0)
    arrays = encode(ids, logp, tail, vocab_size=1000)
    assert arrays["id_planes"].dtype == np.uint8 and arrays["id_planes"].shape == (2, 200, 32)  # uint16 ids
    got_ids, got = decode(arrays)
    np.testing.assert_array_equal(got_ids, ids.numpy())
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, rtol=1e-5)
    spread = (logp.max(1).values - logp.min(1).values).numpy()
    err = np.abs(got[:, :32] - logp.numpy()).max(1)
    # half a step of the 255-level grid, float16 rounding of the top log-prob and step, and the renormalisation
    assert (err <= spread / 510 + 0.01 + 2e-3 * np.abs(logp.numpy()).max(1)).all()
    assert encode(ids, logp, tail, vocab_size=70_000)["id_planes"].shape[0] == 4  # uint32 past 65,536 ids


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return make_records(6, 1)


def _capture(student: Path, teacher: Path, out: Path, records: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    config = CaptureConfig.model_validate({"teacher_model": str(teacher), "student_model": str(student),
                                           "max_seq_len": 128, "resources": {"device": "cpu"}, **kw})
    return run_capture(config, records, out)


def test_chunked_offline_loss_matches_the_full_kl_on_a_tiny_model(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    tokenizer, vocab = load_tokenizers(str(tiny_model_dir), str(padded_teacher_dir))
    examples = prepare_examples(records, tokenizer, max_seq_len=128).train.examples[:3]
    batch = collate(examples, tokenizer.pad_token_id)
    student = load_teacher(tiny_model_dir)  # frozen is fine: only the loss values are compared
    teacher = load_teacher(padded_teacher_dir)
    full = compute_span_losses(student, batch, teacher=teacher, vocab_size=vocab, chunk_size=16).reason_sum
    gaps = {}
    for k in (8, vocab):
        out = tmp_path / f"k{k}"
        _capture(tiny_model_dir, padded_teacher_dir, out, records, top_k=k)
        signal = OfflineSignal.load(out, temperature=1.0, max_seq_len=128, vocab_size=vocab)
        offline = compute_span_losses(student, {**batch, **signal.rows(examples, torch.device("cpu"))},
                                      vocab_size=vocab, chunk_size=16).reason_sum
        gaps[k] = float(full - offline)
    assert abs(gaps[vocab]) <= 0.02 * float(full)  # k = V: only the quantization error is left
    assert gaps[8] > gaps[vocab] - 0.02 * float(full) and gaps[8] >= -0.02 * float(full)


def test_capture_resumes_from_its_finished_shards(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    config = CaptureConfig.model_validate({"teacher_model": str(padded_teacher_dir),
                                           "student_model": str(tiny_model_dir), "max_seq_len": 128,
                                           "shard_size": 2, "resources": {"device": "cpu"}})
    out = tmp_path / "capture"
    calls = iter([False, True])  # the first shard runs, then a stop (cancel, SIGTERM) arrives
    first = run_capture(config, records, out, should_stop=lambda: next(calls, True))
    assert first["status"] == "stopped" and first["shards_done"] == [0]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(BadJobInput, match="complete"):
        OfflineSignal.load(out, temperature=1.0, max_seq_len=128, vocab_size=first["manifest"]["vocab_size"])
    stat = os.stat(out / shard_name(0))

    second = run_capture(config, records, out)
    assert second["status"] == "completed" and second["shards_skipped"] == [0] and second["shards_done"] == [1, 2]
    again = os.stat(out / shard_name(0))
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not rewritten

    fresh = run_capture(config, records, tmp_path / "fresh")
    assert fresh["shards_done"] == [0, 1, 2]
    for i in range(3):
        with np.load(out / shard_name(i)) as a, np.load(tmp_path / "fresh" / shard_name(i)) as b:
            assert all(np.array_equal(a[name], b[name]) for name in a.files)
    with pytest.raises(BadJobInput, match="capture of something else"):
        run_capture(config.model_copy(update={"top_k": 4}), records, out)


def test_storage_at_k32_is_at_most_64_bytes_per_position(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    manifest = _capture(tiny_model_dir, padded_teacher_dir, tmp_path, records, top_k=32)["manifest"]
    assert manifest["complete"] and manifest["positions"] > 100 and manifest["id_dtype"] == "uint16"
    assert manifest["bytes_per_position"] <= 64, manifest


def test_offline_distill_trains_from_a_capture_and_refuses_a_mismatch(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    out = tmp_path / "capture"
    _capture(tiny_model_dir, padded_teacher_dir, out, records, top_k=1024)  # the whole vocabulary
    config = make_config(tiny_model_dir, teacher_model=str(padded_teacher_dir),
                         loss={"teacher_signal": "offline", "capture": str(out)})
    result = run_training(config, records, tmp_path / "run")
    online = run_training(make_config(tiny_model_dir, teacher_model=str(padded_teacher_dir),
                                      loss={"teacher_signal": "online"}), records, tmp_path / "online")
    assert result.status == "completed" and len(result.history) == 4
    for got, want in zip(result.history, online.history, strict=True):  # the same batches, the same KL
        assert got["reason_tokens"] == want["reason_tokens"] > 0
        assert got["loss_reason"] == pytest.approx(want["loss_reason"], rel=0.03)
        assert got["loss_action"] == pytest.approx(want["loss_action"], rel=1e-3)

    for bad in ({"loss": {"temperature": 2.0}}, {"training": {"max_seq_len": 64}}):
        cfg = make_config(tiny_model_dir, teacher_model=str(padded_teacher_dir),
                          loss={"teacher_signal": "offline", "capture": str(out), **bad.get("loss", {})},
                          training=bad.get("training", {}))
        with pytest.raises(BadJobInput, match="does not fit"):
            run_training(cfg, records, tmp_path / "bad")
    other = make_records(8, 0)[6:]  # records the capture never saw
    with pytest.raises(BadJobInput, match="not in the capture"):
        run_training(config, other, tmp_path / "other")


def test_a_capture_that_lost_its_lease_writes_nothing_more(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    import time
    import uuid

    from worker.fence import FileFence, LeaseLost

    token = str(uuid.uuid4())
    lease = tmp_path / f"{token}.json"

    def hold(seconds: float) -> None:
        lease.write_text(json.dumps({"token": token, "attempt": 1, "valid_until": time.time() + seconds}))

    hold(600)
    config = CaptureConfig.model_validate({"teacher_model": str(padded_teacher_dir),
                                           "student_model": str(tiny_model_dir), "max_seq_len": 128,
                                           "shard_size": 2, "resources": {"device": "cpu"}})
    out = tmp_path / "capture"
    with pytest.raises(LeaseLost):
        # A successor took the job after the first shard: the paused attempt's next promote is refused.
        run_capture(config, records, out, fence=FileFence(lease, 1), progress=lambda _row: hold(-1))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", shard_name(0)]  # no scratch left behind
    assert not json.loads((out / "manifest.json").read_text())["complete"]
