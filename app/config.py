"""Settings for the API and the worker, read from ``DISTILLERY_*`` environment variables.

One ``Settings`` object; ``get_settings()`` caches it. Limits live here so that every endpoint
states the same numbers in its 413/422 answers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("distillery", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    database_url: str | None = Field(
        None, description="SQLAlchemy/psycopg URL. Unset: an embedded Postgres in data_dir is started."
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="Embedded Postgres data, artifacts.")
    admin_key: SecretStr | None = Field(None, description="Bootstrap admin API key (all scopes).")
    models_root: Path | None = Field(
        default_factory=lambda data: data["data_dir"] / "models",
        description="Local models are folders under this one (default: <data_dir>/models; filled by "
        "'distillery models add|tiny'). Jobs name them by their path inside it.",
    )

    db_pool_size: int = Field(10, ge=1, le=200)
    db_max_overflow: int = Field(10, ge=0, le=200)
    db_statement_timeout_ms: int = Field(30_000, ge=100)
    db_snapshot_timeout_ms: int = Field(
        600_000, ge=100, description="Statement timeout inside a dataset snapshot's transaction (it copies every "
        "selected trajectory in one statement, which may take longer than a request's statements should).")
    db_idle_in_transaction_timeout_ms: int = Field(
        60_000, ge=1000, description="The server ends a session left idle inside a transaction this long.")
    auth_cache_seconds: float = Field(5.0, ge=0, description="How long a verified key is trusted in memory "
                                      "(revocation reaches every process at once through NOTIFY regardless).")
    auth_negative_cache_seconds: float = Field(10.0, ge=0, description="How long an unknown key is refused "
                                               "from memory, without asking the database.")
    auth_lookups_per_second: float = Field(
        100.0, ge=0, description="Database lookups of not yet verified keys per process (429 beyond; 0 = no limit).")

    # Per-key limits, per API process (answered with 429 and Retry-After; 0 turns one off).
    rate_limit_per_second: float = Field(1000.0, ge=0, description="Sustained requests per second of one key.")
    rate_limit_burst: int = Field(2000, ge=1, description="Requests one key may send at once before the rate applies.")
    max_in_flight_per_key: int = Field(32, ge=0, description="Requests of one key being served at a time.")
    idempotency_ttl_seconds: int = Field(
        86_400, ge=60, description="Idempotency-Key records expire after this; the key may then be used again.")
    idempotency_purge_seconds: float = Field(600.0, ge=1, description="How often expired records are deleted.")

    # Slow clients. The body timeout is enforced by the app; the others are uvicorn options that
    # `distillery serve` passes (timeout_keep_alive, limit_concurrency, the header timeout protocol).
    request_body_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body (408 beyond).")
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest time a new connection may take to send its request line and headers.")
    http_keep_alive_seconds: float = Field(5.0, gt=0, description="Idle keep-alive connections close after this.")
    http_max_connections: int | None = Field(
        1000, ge=1, description="Open connections per API process; more are answered 503 at once.")

    # Limits: answered with 413/422 problem+json that states the limit; never truncation.
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Single-item request body limit.")
    max_batch_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Batch request body limit.")
    max_batch_items: int = Field(1000, ge=1, le=10_000)
    max_messages: int = Field(2000, ge=1)
    max_message_chars: int = Field(1_000_000, ge=1)
    max_trajectory_chars: int = Field(4_000_000, ge=1)
    max_metadata_bytes: int = Field(64 * 1024, ge=2)
    max_tags: int = Field(64, ge=0)
    max_spans: int = Field(20_000, ge=1)

    # Workers (``distillery worker`` / ``python -m worker``). The API reads the lease too: a worker whose
    # heartbeat is older than three leases is reported as not alive.
    worker_lease_seconds: float = Field(60.0, gt=0, le=86_400, description="Job lease; renewed every third of it.")
    worker_poll_interval: float = Field(
        5.0, gt=0, le=3600, description="Polling fallback beside LISTEN/NOTIFY (also picks up expired leases)."
    )
    worker_kinds: Annotated[list[str] | None, NoDecode] = Field(
        None, description="Job kinds this worker takes (comma-separated); unset = every kind with a handler."
    )
    worker_plugins: str | None = Field(
        None, description="Handler plugins: 'pkg.module,pkg.other:setup' (see worker.handlers)."
    )
    worker_listen: bool = Field(True, description="Wake on LISTEN/NOTIFY; false = poll only (benchmarks).")
    # What a worker advertises (worker.capabilities); its claims pick only jobs that fit.
    worker_gpus: int | None = Field(
        None, ge=0, le=4096, description="GPUs this worker advertises; unset = the CUDA devices torch sees."
    )
    worker_launchers: str | None = Field(
        None, description="Launchers this worker advertises, comma-separated (inprocess,torchrun,slurm); unset = "
        "inprocess, torchrun when torch is installed, slurm when sbatch is on PATH.",
    )
    worker_torchrun: str | None = Field(
        None, description="Launcher of multi-process jobs (resources.gpus > 1), e.g. 'torchrun'; unset = the "
        "worker's own Python with -m torch.distributed.run.",
    )
    # Slurm (jobs with resources.nodes > 1 or launcher "slurm"; see worker.launchers.slurm). The worker runs on
    # a submit host; DISTILLERY_DATA_DIR must be on a filesystem every compute node mounts at the same path.
    worker_slurm_partition: str | None = Field(
        None, description="sbatch --partition for Distillery jobs; unset = the cluster's default partition."
    )
    worker_slurm_sbatch_args: str | None = Field(
        None, description="More sbatch options, shell-quoted (e.g. '--account=ml --time=1-00:00:00 --exclusive'); "
        "they come last, so they override Distillery's own.",
    )
    worker_slurm_setup: str | None = Field(
        None, description="Shell lines the batch script runs before srun (e.g. 'source /shared/venv/bin/activate'); "
        "srun passes the resulting environment to every node.",
    )
    worker_slurm_poll_interval: float = Field(
        5.0, gt=0, le=600, description="Seconds between squeue/scontrol queries while a Slurm job runs."
    )
    worker_slurm_rdzv_port: int | None = Field(
        None, ge=1024, le=65535,
        description="TCP port of the torchrun rendezvous on the job's first node; unset = 29500 + Slurm job id % 1000.",
    )

    log_level: str = Field("INFO")
    log_json: bool = Field(True, description="JSON log lines (one object per line).")

    @field_validator("worker_kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: Any) -> Any:
        if isinstance(value, str):  # DISTILLERY_WORKER_KINDS=distill,evaluate
            return [k.strip() for k in value.split(",") if k.strip()] or None
        return value

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "pgdata"

    def job_dir(self, job_id: object) -> Path:
        """Where a job's artifacts live (checkpoints, final model, reports): shared by the API and workers."""
        return self.data_dir / "jobs" / str(job_id)


@lru_cache
def get_settings() -> Settings:
    return Settings()
