"""Distillery API: trajectories in, spans corrected, datasets frozen, jobs launched. Never imports torch."""
