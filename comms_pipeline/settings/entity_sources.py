"""One ``[entity_sources.<name>]`` section: a SQL query that reads an entity's business data."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

#: SQLAlchemy's own rule for ``:name`` bind parameters in ``text()``.
BIND_RE = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")


class EntitySource(BaseModel):
    """One ``[entity_sources.<name>]`` section."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    query: str = Field(min_length=1)
    database_url: str | None = None
    entity: str | None = None
    field: str | None = None
    many: bool = False

    @property
    def target(self) -> str:
        return self.entity or self.name

    @property
    def parameters(self) -> list[str]:
        return list(dict.fromkeys(BIND_RE.findall(self.query)))
