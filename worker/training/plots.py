"""Loss-curve plot of a run, drawn from its metrics.jsonl (matplotlib, headless Agg backend).

Top panel: total loss and the per-kind losses (reason, action, and the curriculum term when it is on) per
step; bottom panel: the effective span weights and the learning rate. Eval rows (`{"step", "eval"}`) in the
file are ignored. The PNG is listed as a job artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if "loss" in row:
                rows.append(row)
    return rows


def plot_metrics(metrics_path: Path, out_path: Path) -> Path:
    """Write the loss curves of `metrics_path` to `out_path` (PNG); returns `out_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    steps = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[2, 1])
    series = [("loss", "total"), ("loss_reason", "reason"), ("loss_action", "action")]
    if any(r.get("loss_curriculum") for r in rows):
        series.append(("loss_curriculum", "curriculum"))
    for key, label in series:
        top.plot(steps, [r.get(key) for r in rows], label=label, linewidth=1.5)
    top.set_ylabel("loss")
    top.set_title("span-level distillation")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.plot(steps, [r.get("weight_reason") for r in rows], label="weight reason")
    bottom.plot(steps, [r.get("weight_action") for r in rows], label="weight action")
    bottom.set_ylabel("span weight")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    lr_axis = bottom.twinx()
    lr_axis.plot(steps, [r.get("lr") for r in rows], color="grey", linestyle="--", label="lr")
    lr_axis.set_ylabel("lr")
    handles = bottom.get_legend_handles_labels()[0] + lr_axis.get_legend_handles_labels()[0]
    bottom.legend(handles=handles, loc="upper right", fontsize="small")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png", dpi=100)
    plt.close(fig)
    return out_path
