"""Request and response shapes for API key administration."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["ingest", "annotate", "curate", "operate", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="Who or what uses the key.")
    scopes: list[Scope] = Field(min_length=1, description="Granted scopes; admin implies all.")
    sources: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, min_length=1, max_length=100,
        description="Bind an ingest key to these sources: it may write only to them (and so learns nothing "
                    "about others). Only for keys whose sole scope is ingest; unset = any source.")

    @model_validator(mode="after")
    def _sources_only_for_ingest(self) -> KeyCreate:
        if self.sources is not None and set(self.scopes) != {"ingest"}:
            raise ValueError("sources can only be set on a key whose only scope is ingest")
        return self


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    sources: list[str] | None = None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class KeyList(BaseModel):
    items: list[KeyRead]
