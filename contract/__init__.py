"""The contract both sides of Distillery import: torch-free and database-free.

- ``spans``: the message and span types, one ``SpanKind``, span validation;
- ``formats``: one parser + exporter per input format, and the canonical hash;
- ``complexity``: per-trajectory complexity (curriculum ordering, dataset filters);
- ``job_config``: the job configurations the API validates and the worker runs;
- ``vocab``: tokenizer / vocabulary comparison on ``tokenizer.json`` files or loaded tokenizers;
- ``rundir``: a job's run-directory layout, the train result and the trainer's exit codes;
- ``validation``: turning pydantic errors into field-path problems.

Nothing here imports ``app``, ``worker``, torch, SQLAlchemy or FastAPI (a test walks the imports).
"""
