"""The built-in synthetic shop task as ``distillery demo`` uses it (``worker.synthetic``).

- ``post_teacher_runs``: the scripted teacher solves training problems with the real tools, and each run
  is recorded step by step with the public client's recorder (``Distillery.trajectory``), the way an
  agent adopts Distillery, and posted through the client's background batches;
- ``score_student``: a model acts as an agent on held-out problems (the agent runner executes its tool
  calls) and is scored on task success;
- ``plot_before_after``: held-out success before and after training, with the reasons for failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery import Distillery
from worker.synthetic import Problem

SOURCE = "distillery-demo"


def post_teacher_runs(client: Distillery, problems: list[Problem], *, seed: int,
                      on_progress: Callable[[int], None] = lambda _: None) -> dict[str, int]:
    """Record the teacher's run on each problem through the client's recorder; ``{posted, new, failed}``."""
    from worker.synthetic import SYSTEM_PROMPT, teacher_payload

    recorders = []
    for i, problem in enumerate(problems, 1):
        payload = teacher_payload(problem, "openai", seed=seed, error_rate=0.1)
        with client.trajectory(task=problem.question, source=SOURCE, external_id=payload["external_id"],
                               teacher_model=payload["teacher_model"], task_type=payload["task_type"],
                               system=SYSTEM_PROMPT, tags=[*payload["tags"], f"seed-{seed}"],
                               metadata=payload["metadata"], reward=payload["reward"], background=True) as run:
            for message in payload["messages"][2:]:  # after the system prompt and the task
                if message["role"] == "tool":
                    run.observation(message["tool_call_id"], message["content"])
                elif message.get("tool_calls"):
                    run.say(message["content"])
                    for call in message["tool_calls"]:
                        fn = call["function"]
                        run.tool_call(fn["name"], json.loads(fn["arguments"]), id=call["id"])
                else:
                    run.final(message["content"])
        recorders.append(run)
        on_progress(i)
    client.flush()
    stored = [r for r in recorders if r.status == "stored"]
    return {"posted": len(stored), "new": sum(bool((r.receipt or {}).get("created")) for r in stored),
            "failed": len(recorders) - len(stored)}


def score_student(model_dir: str | Path, problems: list[Problem], *, max_steps: int = 6) -> dict[str, Any]:
    """The model at ``model_dir`` acting on ``problems`` (greedy, no tool schemas in the prompt, as it was
    trained): success rate, counts and failures by reason (``worker.synthetic.evaluate_agent``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.synthetic import evaluate_agent, hf_generate_fn

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    return evaluate_agent(hf_generate_fn(model, tokenizer, tools=None), problems, "openai", max_steps=max_steps)


def plot_before_after(before: dict[str, Any], after: dict[str, Any], out: Path) -> Path:
    """A bar chart of held-out task success before and after training, failures stacked by reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["before (untrained)", "after distillation"]
    fig, ax = plt.subplots(figsize=(6, 4))
    solved = [before["n_success"], after["n_success"]]
    ax.bar(labels, solved, color="tab:green", label="solved")
    bottom = list(solved)
    reasons = sorted(set(before["failures"]) | set(after["failures"]))
    for reason in reasons:
        counts = [before["failures"].get(reason, 0), after["failures"].get(reason, 0)]
        ax.bar(labels, counts, bottom=bottom, label=reason.replace("_", " "), alpha=0.6)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    for i, (n, total) in enumerate(zip(solved, bottom, strict=True)):
        ax.text(i, total, f"solved {n}/{before['n'] if i == 0 else after['n']}", ha="center", va="bottom",
                fontweight="bold")
    ax.set_ylim(0, max(bottom) * 1.12 + 1)
    ax.set_ylabel("held-out tasks")
    ax.set_title("synthetic shop: the student acting as an agent")
    # below the axes: the bars reach the top on both sides, so a legend inside would cover their labels
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=max(1, len(reasons) + 1), fontsize="small",
              frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
