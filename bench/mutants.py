"""A small mutation check: plant one known bug at a time in a copy of the tree and see whether the tests notice.

Each mutant is an exact text replacement in one file (the old text must occur exactly once, or the script
stops: a mutant that no longer applies is a stale list, not a survivor) and the tests that should catch it.
The tree is copied once into a temporary directory (never touching the working tree), each mutant is applied
there, its tests run with this interpreter against the copy, and the file is restored. A mutant is *killed*
when its tests fail; *survived* when they pass. ``--baseline`` first runs every listed test file on the
unmutated copy (a baseline failure makes every kill meaningless).

    DISTILLERY_TEST_DATABASE_URL=postgresql://... .venv/bin/python bench/mutants.py [--only NAME ...] [--baseline]

Target (docs/benchmarks.md): every curated mutant killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SKIP = (".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules",
         "*.egg-info", ".hypothesis")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


M = Mutant
MUTANTS: list[Mutant] = [
    # ---- the queue ---------------------------------------------------------------------------------------
    M("claim-no-skip-locked", "app/jobs/queue.py",
      "        .limit(1)\n        .with_for_update(skip_locked=True)\n        .scalar_subquery()",
      "        .limit(1)\n        .with_for_update()\n        .scalar_subquery()",
      ("tests/jobs/test_claim_skip_locked.py",), "claims wait on each other's row locks"),
    M("claim-no-row-lock", "app/jobs/queue.py",
      "        .limit(1)\n        .with_for_update(skip_locked=True)\n        .scalar_subquery()",
      "        .limit(1)\n        .scalar_subquery()",
      ("tests/worker/test_queue.py::test_concurrent_claims_never_share_a_job",), "two workers may get one job"),
    M("fencing-no-token", "app/jobs/queue.py",
      "    if token is not None:\n        held.append(jobs.c.lease_token == token)",
      "    if False:\n        held.append(jobs.c.lease_token == token)",
      ("tests/worker/test_queue.py",), "a stale attempt's writes are accepted"),
    M("lease-refusal-ignored-by-the-heartbeat", "worker/heartbeat.py",
      "        if not result.ok:\n            lease.mark_lost()\n"
      "            self._check_deadline()\n            return",
      "        if not result.ok:\n            return",
      ("tests/jobs/test_lease_loss.py",), "a refused token does not stop the job (only the deadline would)"),
    M("torchrun-no-pdeathsig", "worker/launchers/torchrun.py",
      "        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)", "        pass",
      ("tests/jobs/test_pdeathsig.py",), "ranks outlive a dead worker and train beside its successor"),
    # ---- ingest ------------------------------------------------------------------------------------------
    M("idempotency-not-per-api-key", "app/idempotency.py",
      'scoped = f"{principal.key_id}:{key}"', "scoped = key",
      ("tests/app/test_idempotency_scope.py",), "tenants read each other's stored answers"),
    M("idempotency-not-per-endpoint", "app/idempotency.py",
      "if record.endpoint != endpoint or record.request_sha256 != digest:",
      "if record.request_sha256 != digest:",
      ("tests/app/test_idempotency_scope.py",), "a key replays another endpoint's answer"),
    M("idempotency-no-body-check", "app/idempotency.py",
      "if record.endpoint != endpoint or record.request_sha256 != digest:",
      "if record.endpoint != endpoint:",
      ("tests/app/test_trajectories.py::test_idempotency_key_replay_and_reuse",), "another body replays"),
    M("limit-message-chars", "app/trajectories/service.py",
      "        if n > settings.max_message_chars:", "        if False:",
      ("tests/app/test_limits_all.py",), "characters per message unbounded"),
    M("limit-trajectory-chars", "app/trajectories/service.py",
      "    if total > settings.max_trajectory_chars:", "    if False:",
      ("tests/app/test_limits_all.py",), "characters per trajectory unbounded"),
    M("limit-tags", "app/trajectories/service.py",
      "    if len(body.tags) > settings.max_tags:", "    if False:",
      ("tests/app/test_limits_all.py",), "tags unbounded"),
    M("limit-spans-ingest", "app/trajectories/service.py",
      "        if len(body.spans) > settings.max_spans:", "        if False:",
      ("tests/app/test_limits_all.py",), "client spans on ingest unbounded"),
    M("limit-spans-replace", "app/annotations/service.py",
      "    row, expected = _precheck(session, trajectory_id, if_match)\n    if len(spans) > settings.max_spans:",
      "    row, expected = _precheck(session, trajectory_id, if_match)\n    if False:",
      ("tests/app/test_limits_all.py",), "a span replacement unbounded"),
    M("limit-spans-edit", "app/annotations/service.py",
      "        raise ValidationFailed(\"An edit operation cannot be applied; nothing was stored.\", "
      "code=\"invalid_edit\",\n                               errors=[exc.error]) from None\n"
      "    if len(spans) > settings.max_spans:",
      "        raise ValidationFailed(\"An edit operation cannot be applied; nothing was stored.\", "
      "code=\"invalid_edit\",\n                               errors=[exc.error]) from None\n    if False:",
      ("tests/app/test_limits_all.py",), "an edit may leave any number of spans"),
    M("limit-batch-bytes", "app/main.py",
      "return settings.max_batch_request_bytes if path in batch_paths else settings.max_request_bytes",
      "return settings.max_request_bytes",
      ("tests/app/test_limits_all.py",), "batches get the single-request byte limit"),
    M("sse-ends-with-backlog", "app/jobs/stream.py",
      "if status is None or (status in TERMINAL_STATUSES and len(rows) < BATCH):",
      "if status is None or status in TERMINAL_STATUSES:",
      ("tests/app/test_sse_backlog.py",), "a finished job's stream ends with events unsent"),
    # ---- annotation ---------------------------------------------------------------------------------------
    M("if-match-no-compare-and-set", "app/annotations/repository.py",
      ".where(trajectories.c.id == trajectory_id, trajectories.c.span_revision == expected,",
      ".where(trajectories.c.id == trajectory_id,",
      ("tests/annotations/test_races.py",), "two concurrent edits both win"),
    # ---- keys ---------------------------------------------------------------------------------------------
    M("revocation-no-eviction", "app/auth.py",
      "            for digest in [d for d, (p, _) in self._items.items() if p.key_id == key_id]:\n"
      "                del self._items[digest]",
      "            pass",
      ("tests/app/test_revocation_cache.py", "tests/app/test_auth.py::test_key_lifecycle"),
      "a revoked key stays trusted from the cache"),
    M("revocation-no-local-eviction", "app/keys/routes.py",
      "    request.app.state.key_cache.evict_key_id(str(row.id))", "    pass",
      ("tests/app/test_revocation_cache.py", "tests/app/test_auth.py::test_key_lifecycle"),
      "the revoking process trusts the key until a NOTIFY comes back"),
    # ---- the worker ---------------------------------------------------------------------------------------
    M("worker-ignores-notify", "worker/loop.py",
      "                    listener.wait(self.poll_interval, self.stop)",
      "                    self.stop.wait(self.poll_interval)",
      ("tests/worker/test_loop.py::test_notify_wakes_a_waiting_worker_and_stop_hands_back",),
      "an idle worker finds new jobs only at its next poll"),
    # ---- segmenting, masks and losses -----------------------------------------------------------------------
    M("react-thought-not-in-turn", "contract/formats/react.py",
      '        if lab[2] == "Thought":', "        if False:",
      ("tests/trajectories/test_formats_react.py",), "a Thought after an Observation lands in the tool turn"),
    M("masks-ties-to-earlier-span", "worker/training/tokens.py",
      'if overlap >= best_len:  # ">=": ties go to the later span', "if overlap > best_len:",
      ("tests/worker/test_render.py",), "a token split evenly between spans takes the earlier kind"),
    M("loss-labels-not-shifted", "worker/training/losses.py",
      "    tgt_kind = kinds[:, 1:]", "    tgt_kind = kinds[:, :-1]",
      ("tests/worker/test_losses.py",), "position t trained on the kind of token t, not t+1"),
    M("ddp-no-world-scaling", "worker/training/trainer.py",
      "scale = float(self.world) if not lc.pcgrad else 1.0", "scale = 1.0",
      ("tests/worker/test_ddp.py",), "several ranks train with gradients 1/world too small"),
    # ---- resume -------------------------------------------------------------------------------------------
    M("resume-without-sampler-state", "worker/training/trainer.py",
      "        self.sampler.load_state_dict(sampler_state)", "        pass",
      ("tests/worker/test_recipe.py::test_exact_resume_after_stop",), "a resumed run sees other examples"),
    M("resume-without-metrics-trim", "worker/training/trainer.py",
      "            ckpt.trim_rows(self.run.metrics, step)", "            pass",
      ("tests/worker/test_crash_resume.py",), "steps after the checkpoint appear twice in metrics.jsonl"),
]


def _copy_tree(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*_SKIP), symlinks=True)


def _run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "client")]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return done.returncode, lines[-1] if lines else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="mutant names (default: all)")
    ap.add_argument("--baseline", action="store_true", help="first check the listed tests pass unmutated")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's test run")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args()
    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutant names")
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - set(names)
    if unknown:
        raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.file:40} {m.why}")
        return 0
    rows: list[tuple[str, str, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="distillery-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        for m in chosen:  # every mutant must still apply to the current code, before anything runs
            text = (tree / m.file).read_text()
            if text.count(m.old) != 1:
                raise SystemExit(f"mutant {m.name}: the old text occurs {text.count(m.old)} times in {m.file}")
        if args.baseline:
            files = sorted({t for m in chosen for t in m.tests})
            rc, last = _run_tests(tree, tuple(files), args.timeout * 2)
            print(f"baseline ({len(files)} test targets): rc={rc} {last}")
            if rc != 0:
                raise SystemExit("the unmutated tree fails its tests: fix that first")
        for m in chosen:
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            started = time.monotonic()
            try:
                rc, last = _run_tests(tree, m.tests, args.timeout)
            finally:
                path.write_text(original)
            verdict = "killed" if rc not in (0, 5) else ("survived" if rc == 0 else "no tests ran")
            rows.append((m.name, m.file, verdict, time.monotonic() - started, last[:70]))
            print(f"{m.name}: {verdict} ({rows[-1][3]:.0f} s) {last[:90]}", flush=True)
    sys.path.insert(0, str(ROOT / "bench"))
    from common import print_table

    print_table("Mutants (killed = the listed tests fail on the mutant)",
                ["mutant", "file", "result", "s", "tests said"], [list(r) for r in rows])
    survived = [r[0] for r in rows if r[2] != "killed"]
    tail = f"; survived: {', '.join(survived)}" if survived else ""
    print(f"\n{len(rows) - len(survived)}/{len(rows)} killed{tail}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
