"""Datasets: immutable snapshots of curated trajectories, their split, statistics and export."""
