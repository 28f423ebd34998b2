"""Request and response shapes for API key administration."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["ingest", "annotate", "curate", "operate", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="Who or what uses the key.")
    scopes: list[Scope] = Field(min_length=1, description="Granted scopes; admin implies all.")


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class KeyList(BaseModel):
    items: list[KeyRead]
