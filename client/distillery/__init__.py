"""Distillery's Python client (httpx only): ``from distillery import Distillery``.

Modules by responsibility: ``wire`` (JSON bodies, problem errors, SSE), ``transport`` (retries),
``api`` (the calls), ``client`` / ``aio`` (the sync and async clients), ``batching`` (background
batches), ``recorder`` + ``spool`` (recording trajectories, crash-safe), ``capture`` (OpenAI and
Anthropic SDK capture).
"""

from distillery.aio import AsyncDistillery
from distillery.batching import Batching, Failure, QueueFull
from distillery.capture import capture_anthropic, capture_openai
from distillery.client import Distillery, DistilleryClient
from distillery.recorder import Trajectory, current_trajectory, first_thought_prefix
from distillery.spool import ReplayReport, Spool
from distillery.transport import Retry
from distillery.wire import DistilleryError, Event

__all__ = [
    "AsyncDistillery", "Batching", "Distillery", "DistilleryClient", "DistilleryError", "Event", "Failure",
    "QueueFull", "ReplayReport", "Retry", "Spool", "Trajectory", "capture_anthropic", "capture_openai",
    "current_trajectory", "first_thought_prefix",
]
