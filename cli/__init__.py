"""The ``distillery`` command: the front door above the API (``app``) and the worker (``worker``)."""
