"""All tables; importing this module registers them on ``Base.metadata`` (alembic relies on it)."""

from app.models.annotation import AnnotationLease, ReviewEvent
from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.dataset import Dataset, DatasetItem, DatasetTombstone
from app.models.idempotency import IdempotencyRecord
from app.models.job import Job, JobEvent
from app.models.span_revision import SpanRevision
from app.models.trajectory import Trajectory
from app.models.worker import Worker

__all__ = ["AnnotationLease", "ApiKey", "Base", "Dataset", "DatasetItem", "DatasetTombstone", "IdempotencyRecord",
           "Job", "JobEvent", "ReviewEvent", "SpanRevision", "Trajectory", "Worker"]
