"""Jobs: distillation and evaluation runs, queued in Postgres and executed by workers.

`schemas.py` holds the torch-free job configs (`DistillConfig`, `EvaluateConfig`) that the API validates at
submit time and the worker hands to the trainer unchanged.
"""
