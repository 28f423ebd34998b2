"""``distillery demo``: from nothing to a distilled student in one command, on a CPU, in a few minutes.

1. Postgres (embedded in the data dir unless ``--database-url``), migrated; the API and a job worker in
   this process; an API key for the demo's client.
2. A student: a tiny random Llama under the models root (``demo-student``, ``worker.models.build_tiny``).
3. A scripted teacher agent solves synthetic tool-use problems with real tools; the public client's
   recorder posts every run (``cli.demo_shop``).
4. The runs are approved in bulk and frozen into a dataset.
5. The untrained student acts on held-out problems: its task success before.
6. A span-level distill job trains it, its progress followed live (plain lines when redirected).
7. The trained student (``job:<id>``) acts on the same held-out problems: its task success after.

It prints "student solved N/M held-out tasks (was K/M)" and writes the loss curves, a before/after chart
and ``summary.json`` into ``--out``. Everything stays in the database and the data dir: ``distillery
serve`` on the same data dir (or ``--serve`` here) shows the trajectories, the dataset and the job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

STUDENT = "demo-student"
TINY = {"vocab_size": 512, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
        "max_position_embeddings": 1024}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Steps:
    """Numbered step lines with the seconds each took."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.started = total, 0, time.monotonic()
        self.step_started = self.started

    def begin(self, text: str) -> None:
        self.n += 1
        self.step_started = time.monotonic()
        _say(f"[{self.n}/{self.total}] {text}")

    def done(self, text: str) -> None:
        _say(f"      {text} ({time.monotonic() - self.step_started:.1f} s)")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _quiet_libraries() -> None:
    """The demo's terminal shows its own steps: library warnings and progress bars stay out of it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging

    from app.observability import configure_logging

    configure_logging("WARNING", as_json=False)
    logging.getLogger("distillery").setLevel(logging.ERROR)  # the client's delivery notes; failures are counted
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _student(root: Path, seed: int) -> Path:
    """The tiny student under the models root, built once per seed (the same arguments give the same model)."""
    from worker.models import build_tiny, read_manifest

    folder = root / STUDENT
    if read_manifest(folder).get("tiny") != {**TINY, "seed": seed} or not (folder / "config.json").is_file():
        build_tiny(root, STUDENT, seed=seed, force=True, **TINY)
    return folder


def demo(
    data_dir: Annotated[Path | None, typer.Option(
        help="Where the embedded Postgres, the models root and job artifacts live (default: "
             "DISTILLERY_DATA_DIR or the per-user data folder, which 'distillery serve' uses too).")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="A Postgres URL instead of the embedded server (default: DISTILLERY_DATABASE_URL).")] = None,
    port: Annotated[int, typer.Option(help="API port (another free one when taken; 0: any).")] = 8000,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="Training steps of the distill job.")] = 800,
    train_tasks: Annotated[int, typer.Option(min=4, max=340, help="Problems the teacher solves and posts.")] = 300,
    held_out: Annotated[int, typer.Option(min=1, max=85, help="Held-out problems the student is scored on.")] = 40,
    seed: Annotated[int, typer.Option(help="Problems, teacher, student and split seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Where the plots and summary.json go.")] = Path("distillery-demo"),
    serve: Annotated[bool, typer.Option("--serve", help="Keep the API and worker running afterwards (Ctrl-C stops).")
                     ] = False,
    threads: Annotated[int, typer.Option(min=1, max=256, help="Torch threads (a model this small is fastest on one).")
                       ] = 1,
) -> None:
    """Distill a tiny student from a scripted teacher agent, end to end on this machine: ingest through the
    Python client, approve, freeze a dataset, train with span-level losses, and score the student as an
    agent on held-out tasks before and after. A few minutes on a laptop CPU; no downloads."""
    from app.config import Settings

    overrides: dict[str, Any] = {"log_json": False}
    if data_dir is not None:  # the models root follows it unless DISTILLERY_MODELS_ROOT says otherwise
        overrides["data_dir"] = data_dir.expanduser().resolve()
    if database_url:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)
    from cli.stack import exit_on_sigterm

    exit_on_sigterm()
    if settings.models_root is None:
        _say("the demo needs a models root (DISTILLERY_MODELS_ROOT)")
        raise typer.Exit(2)
    _quiet_libraries()
    import torch

    torch.set_num_threads(threads)  # the training (in the worker thread) and the student's acting alike
    raise typer.Exit(run_demo(settings, port=port, steps=steps, train_tasks=train_tasks, held_out=held_out,
                              seed=seed, out=out.expanduser().resolve(), serve=serve))


def run_demo(settings: Any, *, port: int, steps: int, train_tasks: int, held_out: int, seed: int, out: Path,
             serve: bool) -> int:
    from sqlalchemy.engine import make_url

    from cli.demo_shop import SOURCE, post_teacher_runs, score_student
    from cli.progress import follow_job
    from cli.stack import running_stack
    from distillery import Distillery
    from worker.synthetic import generate_problems

    plan = Steps(7)
    where = (make_url(settings.database_url).render_as_string(hide_password=True) if settings.database_url
             else f"embedded Postgres in {settings.pgdata_dir}")
    plan.begin(f"starting the database ({where}), the API and a worker")
    with running_stack(settings, port=port) as stack, Distillery(stack.api_url, stack.api_key, spool=False) as api:
        plan.done(f"API on {stack.api_url} (docs: {stack.api_url}/docs)")
        root = settings.models_root
        plan.begin(f"building the student: a tiny random Llama, '{STUDENT}' under the models root {root}")
        student_dir = _student(root, seed)
        plan.done(f"{STUDENT} at {student_dir}")

        plan.begin(f"a scripted teacher agent solves {train_tasks} shop problems with real tools; "
                   "the Python client records and posts each run")
        train = generate_problems(train_tasks, seed=seed, split="train", max_items=2)
        posted = post_teacher_runs(api, train, seed=seed)
        plan.done(f"{posted['posted']} trajectories stored ({posted['new']} new), {posted['failed']} failed")
        if posted["posted"] == 0:
            _say("nothing was stored; see the log above")
            return 1

        plan.begin("approving them and freezing a dataset")
        selection = {"source": SOURCE, "tags": [f"seed-{seed}"]}
        review = api.review_bulk("approve", selection, note="distillery demo: the scripted teacher is always right")
        # 20% eval: the split hashes server-made ids, so a small run must not be left without eval items.
        dataset = api.create_dataset(f"demo-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}", selection, seed=seed,
                                     eval_fraction=0.2,
                                     description="distillery demo: scripted teacher runs on the synthetic shop")
        counts = dataset["counts"]
        plan.done(f"{review['changed']} approved; dataset {dataset['id']}: {counts['train']} train / "
                  f"{counts['eval']} eval")

        problems = generate_problems(held_out, seed=seed, split="test", max_items=2)
        plan.begin(f"the untrained student acts on {held_out} held-out problems")
        before = score_student(student_dir, problems)
        plan.done(f"solved {before['n_success']}/{before['n']}")

        plan.begin(f"distilling: a span-level job of {steps} steps on the dataset")
        job = api.submit_job(distill_spec(dataset["id"], steps, seed), idempotency_key=None)
        _say(f"      job {job['id']} (follow it elsewhere: distillery jobs follow {job['id']})")
        try:
            status = follow_job(api, job["id"])
        except KeyboardInterrupt:  # stopping the demo stops its job too, rather than leaving it queued
            api.cancel_job(job["id"])
            raise
        plan.done(f"job {job['id']} {status}")
        if status != "succeeded":
            _say(f"the job {status}; 'distillery jobs show {job['id']}' has the details")
            return 1

        plan.begin(f"the trained student (job:{job['id']}) acts on the same {held_out} held-out problems")
        from worker.models import resolve_reference

        after = score_student(resolve_reference(f"job:{job['id']}", stack.settings), problems)
        plan.done(f"solved {after['n_success']}/{after['n']}")

        files = write_outputs(api, job["id"], out, before, after,
                              {"job_id": job["id"], "dataset_id": dataset["id"], "api_url": stack.api_url,
                               "data_dir": str(settings.data_dir), "steps": steps, "seed": seed,
                               "train_tasks": train_tasks, "trajectories": posted})
        print(f"student solved {after['n_success']}/{after['n']} held-out tasks (was {before['n_success']}/"
              f"{before['n']})", flush=True)
        _say(f"done in {plan.elapsed:.0f} s; wrote " + ", ".join(str(f) for f in files))
        _say(opening_hint(stack, job["id"], dataset["id"], serve=serve, embedded=settings.database_url is None))
        if serve:
            _serve_until_interrupted()
    return 0


def distill_spec(dataset_id: str, steps: int, seed: int) -> dict[str, Any]:
    """The demo's job: span-level losses (reason + action), no teacher model (the trajectories are the
    signal), settings measured to teach the tiny student the task (docs/benchmarks.md)."""
    return {
        "kind": "distill", "dataset_id": dataset_id, "student_model": STUDENT, "max_attempts": 1,
        "loss": {"mode": "span", "weighting": "fixed"},
        "curriculum": {"schedule": "none", "seed": seed},
        "training": {"max_steps": steps, "micro_batch_size": 16, "lr": 3e-3, "warmup_steps": min(25, steps),
                     "min_lr_ratio": 0.0, "max_seq_len": 384, "checkpoint_every": 0, "eval_max_examples": 20,
                     "action_exact_match_max": 20, "seed": seed},
    }


def write_outputs(api: Any, job_id: str, out: Path, before: dict[str, Any], after: dict[str, Any],
                  facts: dict[str, Any]) -> list[Path]:
    """The job's loss curves (its artifact), the before/after chart and summary.json, into ``out``."""
    from cli.demo_shop import plot_before_after
    from contract.rundir import EVAL_REPORT, PLOT

    out.mkdir(parents=True, exist_ok=True)
    files = [api.download_artifact(job_id, PLOT, out / PLOT),
             plot_before_after(before, after, out / "before_after.png")]
    from distillery import DistilleryError

    try:
        report = json.loads(api.read_artifact(job_id, EVAL_REPORT))
    except DistilleryError as exc:  # a dataset whose seeded split left no eval item: no eval report
        if exc.code != "artifact_not_found":
            raise
        report = {}
    summary = {**facts, "held_out": {"before": before, "after": after},
               "eval_nll": {when: {kind: (report.get(when) or {}).get(kind, {}).get("nll")
                                   for kind in ("reason", "action")} for when in ("before", "after")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [*files, out / "summary.json"]


def opening_hint(stack: Any, job_id: str, dataset_id: str, *, serve: bool, embedded: bool) -> str:
    """How to open what the demo left in the database."""
    data_dir = stack.settings.data_dir
    lines = ["Everything is in the database:"]
    url = stack.api_url
    if not serve:
        env = f"DISTILLERY_DATA_DIR={data_dir} " if os.environ.get("DISTILLERY_DATA_DIR") != str(data_dir) else ""
        if not embedded:
            env += "DISTILLERY_DATABASE_URL=<the same URL> "
        lines.append(f"  {env}distillery serve --with-worker     # then, in another shell:")
        url = "http://127.0.0.1:8000"
    lines += [f"  export DISTILLERY_API_KEY={stack.api_key}   # the demo's key (every scope)",
              f"  distillery jobs show {job_id} --api {url}     # also: jobs artifacts, jobs lineage",
              f"  {url}/docs; the dataset: {url}/v1/datasets/{dataset_id}",
              f'  later jobs can start from the trained student: "student_model": "job:{job_id}"']
    return "\n".join(lines)


def _serve_until_interrupted() -> None:
    _say("serving; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
