"""How a followed job shows up where no one watches a terminal (a pipe, a log file, CI): plain progress lines,
at most one per interval, never losing the last step or a state change (``cli.progress.follow_job``). The
end-to-end runs (``tests/jobs/test_cli.py``, ``tests/cli/test_demo.py``) follow real jobs this way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cli.progress import follow_job
from distillery import Event


class FakeJobs:
    """The two client calls the follower makes, answering from a script of SSE events."""

    def __init__(self, events: list[Event], final: dict[str, Any]) -> None:
        self.events, self.final = events, final

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.final

    def stream_events(self, job_id: str) -> Iterator[Event]:
        yield from self.events


def _progress(step: int, total: int) -> Event:
    return Event(id=None, event="progress", data={"data": {"step": step, "total": total, "loss": 1.0 / step,
                                                  "tokens_per_s": 1234.5, "eta_s": total - step}})


def _state(message: str, status: str) -> Event:
    return Event(id=None, event="state",
                 data={"ts": "2026-01-01T00:00:00.000", "message": message, "data": {"status": status}})


def test_plain_lines_are_throttled_but_keep_the_last_step_and_every_state(capsys) -> None:  # type: ignore[no-untyped-def]
    events = [_state("running on w1", "running"), *(_progress(s, 100) for s in range(1, 61)),
              _state("handed back", "queued"), *(_progress(s, 100) for s in range(61, 101)),
              Event(id=None, event="log",
                    data={"ts": "2026-01-01T00:00:09", "level": "info", "message": "saved [final]"}),
              _state("succeeded", "succeeded"), Event(id=None, event="end", data={"status": "succeeded"})]
    status = follow_job(FakeJobs(events, {"status": "succeeded"}), "job-1", interactive=False,  # type: ignore[arg-type]
                        interval=3600)
    assert status == "succeeded"
    out = capsys.readouterr()
    assert out.out == ""  # progress goes to stderr; the caller prints the outcome
    lines = out.err.splitlines()
    assert lines == [
        "2026-01-01T00:00:00 running on w1",
        "step 1/100  loss 1.0000  1,234 tok/s  ETA 0:01:39",  # the first at once
        "step 60/100  loss 0.0167  1,234 tok/s  ETA 0:00:40",  # the last before a state change
        "2026-01-01T00:00:00 handed back",
        "step 100/100  loss 0.0100  1,234 tok/s  ETA 0:00:00",  # the last step, always
        "2026-01-01T00:00:09 info saved [final]",
        "2026-01-01T00:00:00 succeeded",
    ]


def test_every_interval_gets_a_line_and_a_failure_its_reason(capsys) -> None:  # type: ignore[no-untyped-def]
    events = [*(_progress(s, 5) for s in range(1, 4)), _state("failed", "failed"),
              Event(id=None, event="end", data={"status": "failed"})]
    final = {"status": "failed", "error": "Traceback (most recent call last):\n  ...\nModelLoadError: no such model"}
    status = follow_job(FakeJobs(events, final), "job-2", interactive=False, interval=0)  # type: ignore[arg-type]
    assert status == "failed"
    err = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in err[:3]] == ["step 1/5", "step 2/5", "step 3/5"]
    assert err[-1] == "failed: ModelLoadError: no such model"
