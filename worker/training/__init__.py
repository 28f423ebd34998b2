"""Span-level distillation engine: rendering, losses, curriculum, recipe, evaluation."""
