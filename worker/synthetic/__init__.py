"""A built-in synthetic tool-use task ("synthetic shop") for honest end-to-end checks of a student.

Seeded problems (`tasks`) are solved with real tools (`tools`: a price lookup and a safe calculator)
by a scripted teacher (`teacher`) that writes POST /v1/trajectories bodies in the `openai` or `react`
format, and any model can be run as an agent on held-out problems and scored on task success
(`runner`). Small enough that a 2-layer student trained from scratch on CPU measurably learns it.
"""

from worker.synthetic.runner import (
    AgentResult,
    ContextOverflow,
    evaluate_agent,
    hf_generate_fn,
    initial_messages,
    render_prompt,
    replay_generate,
    run_agent,
)
from worker.synthetic.tasks import PRICES, Problem, Step, generate_problems, make_problem
from worker.synthetic.teacher import (
    SYSTEM_PROMPT,
    assistant_texts,
    dataset_records,
    teacher_payload,
    teacher_trajectories,
)
from worker.synthetic.tools import TOOL_SCHEMAS, execute

__all__ = [
    "PRICES",
    "SYSTEM_PROMPT",
    "TOOL_SCHEMAS",
    "AgentResult",
    "ContextOverflow",
    "Problem",
    "Step",
    "assistant_texts",
    "dataset_records",
    "evaluate_agent",
    "execute",
    "generate_problems",
    "hf_generate_fn",
    "initial_messages",
    "make_problem",
    "render_prompt",
    "replay_generate",
    "run_agent",
    "teacher_payload",
    "teacher_trajectories",
]
