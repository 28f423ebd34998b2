"""Jobs: distillation and evaluation runs, queued in Postgres and executed by workers.

The job configs (``DistillConfig``, ``EvaluateConfig``) live in ``contract.job_config``: the API validates
them at submit time (``validation.py``) and the worker hands them to the trainer unchanged.
"""
