"""Distillery's Python client: ``from distillery import DistilleryClient`` (httpx only)."""

from distillery.client import DistilleryClient, DistilleryError, Event

__all__ = ["DistilleryClient", "DistilleryError", "Event"]
