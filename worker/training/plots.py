"""Loss-curve plot of a run, drawn from its metrics file (matplotlib, headless Agg backend).

Top panel: total loss and the per-kind losses (reason, action, and the curriculum term when it is on) per
step; bottom panel: the effective span weights and the learning rate. Eval rows (`{"step", "eval"}`) in the
file are ignored. `plot_run` draws `RunDir.metrics` into `RunDir.plot` (file names from `contract.rundir`),
which the API lists as a job artifact.
"""

from __future__ import annotations

from pathlib import Path

from contract.rundir import RunDir, read_metrics


def plot_run(run: RunDir) -> Path | None:
    """The run's loss curves in its plot file; None when the run has no metrics yet."""
    if not run.metrics.exists():
        return None
    return plot_metrics(run.metrics, run.plot)


def plot_metrics(metrics_path: Path, out_path: Path) -> Path:
    """Write the loss curves of `metrics_path` to `out_path` (PNG); returns `out_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in read_metrics(Path(metrics_path))[0] if "loss" in row]
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
