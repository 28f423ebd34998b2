"""Traces: OTLP/HTTP exports of OpenTelemetry-instrumented agents (``POST /v1/traces``), each trace
assembled into one trajectory of format ``otlp`` (``contract.formats.otlp_spans``) and stored through
the trajectories service; and any trajectory read back as an OTLP trace."""
