"""Span-level distillation engine: rendering, losses, curriculum, the trainer, checkpoints, evaluation."""
