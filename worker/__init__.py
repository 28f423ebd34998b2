"""Distillery worker: claims jobs from Postgres and runs span-level distillation."""
