"""Entity data read from the business database, so a trigger can carry only ids.

Each source is a SQL query with bound parameters, declared in the configuration::

    [entity_sources.subscription]
    query = "SELECT number, type, services FROM subscriptions WHERE id = :subscription_id"
    database_url = "postgresql+psycopg2://reader@db/business"   # default: the comms database

    [entity_sources.subscription_services]
    entity = "subscription"          # put the result into this entity ...
    field = "services"               # ... under this field
    many = true                      # a list of rows (one column: a list of values)
    query = "SELECT name FROM subscription_services WHERE subscription_id = :subscription_id"

Parameters are named after what the trigger (or an earlier source) provides: ``:<entity>_<field>``
for each scalar field of each entity (``{"subscription": {"id": 7}}`` gives
``:subscription_id``; ``{"subscription": 7}`` too), and ``:contact_ref`` / ``:contact_id``.
Sources run in as many rounds as needed (a payment's ``accounts_receivable_id`` can feed the
``accounts_receivable`` source). Values are always bound, never formatted into SQL. Fields the
trigger gave win over the query's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from comms_pipeline.core.errors import CommsError
from comms_pipeline.settings.entity_sources import EntitySource

log = structlog.get_logger(__name__)

class EntitySourceError(CommsError):
    """An entity data source failed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def load_sources(config: Any) -> list[EntitySource]:
    """Sources from ``settings.entity_sources`` or a plain ``{name: {...}}`` mapping."""
    raw = config if isinstance(config, Mapping) else getattr(config, "entity_sources", None)
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise EntitySourceError("entity_sources must be a table of named sources")
    sources = []
    for name, item in raw.items():
        data = item.model_dump() if isinstance(item, BaseModel) else dict(item)
        data["name"] = str(name)
        try:
            sources.append(EntitySource.model_validate(data))
        except ValidationError as exc:
            raise EntitySourceError(f"entity_sources.{name}: {exc}") from None
    return sources


def bind_values(entities: Mapping[str, Any],
                contact: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a query may bind, from the entities and the contact."""
    values: dict[str, Any] = {}
    for name, data in entities.items():
        if isinstance(data, Mapping):
            for key, value in data.items():
                if value is None or isinstance(value, str | int | float | bool):
                    values[f"{name}_{key}"] = value
        elif isinstance(data, str | int):
            values[f"{name}_id"] = data
    for key, value in (contact or {}).items():
        if value is None or isinstance(value, str | int | float | bool):
            values[f"contact_{key}"] = value
    return values


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine_for(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _transient(exc: SQLAlchemyError, url: str) -> bool:
    """A lost or unreachable database (retry later), not a broken query (reject)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if url.startswith("sqlite"):  # SQLite reports bad SQL as OperationalError too
        text_ = str(exc.orig).lower()
        return "locked" in text_ or "unable to open" in text_
    return True


def _run(source: EntitySource, params: dict[str, Any], url: str) -> Any:
    try:
        with _engine_for(url).connect() as conn:
            result = conn.execute(text(source.query), params)
            rows = [dict(r._mapping) for r in (result.fetchall() if source.many
                                                else result.fetchmany(1))]
    except SQLAlchemyError as exc:
        if _transient(exc, url):
            raise EntitySourceError(f"entity source {source.name!r}: database unavailable "
                                    f"({type(exc).__name__})", transient=True) from None
        raise EntitySourceError(f"entity source {source.name!r} failed: "
                                f"{type(exc).__name__}") from None
    if source.many:
        if rows and len(rows[0]) == 1:
            return [next(iter(r.values())) for r in rows]
        return rows
    return rows[0] if rows else None


def _merge(entities: dict[str, Any], source: EntitySource, found: Any) -> None:
    current = entities.get(source.target)
    given = dict(current) if isinstance(current, Mapping) else (
        {"id": current} if current is not None else {})
    if source.field:
        given.setdefault(source.field, found)
    elif isinstance(found, Mapping):
        given = {**found, **given}
    else:
        return
    entities[source.target] = given


def needed_entities(referring: Iterable[str]) -> set[str]:
    """A template's referring entities and the catalogue entities they refer to."""
    from comms_pipeline.rendering.tags import CATALOGUE

    needed: set[str] = set()
    todo = list(referring)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            info = CATALOGUE.get(name)
            todo.extend(info.relations if info else ())
    return needed


def resolve_entities(sources: Iterable[EntitySource], entities_from_trigger: Mapping[str, Any],
                     *, contact: Mapping[str, Any] | None = None,
                     default_url: str | None = None, var_dir: Path | None = None,
                     wanted: Iterable[str] | None = None) -> dict:
    """The trigger's entities completed by every source whose parameters are available.

    ``wanted`` (e.g. :func:`needed_entities` of the template's referring entities) limits
    the queries to the entities the template can show.
    """
    entities: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v)
                                for k, v in (entities_from_trigger or {}).items()}
    keep = None if wanted is None else set(wanted)
    pending = [s for s in sources if keep is None or s.target in keep]
    progressed = True
    while pending and progressed:
        progressed = False
        values = bind_values(entities, contact)
        for source in list(pending):
            if not all(p in values for p in source.parameters):
                continue
            pending.remove(source)
            progressed = True
            url = source.database_url or default_url
            if not url:
                raise EntitySourceError(f"entity source {source.name!r} has no database_url")
            if var_dir is not None:
                url = url.replace("{var}", str(var_dir))
            found = _run(source, {p: values[p] for p in source.parameters}, url)
            if found is None:
                log.info("entity_source.no_row", source=source.name)
                continue
            _merge(entities, source, found)
    return entities


DEMO_SCHEMA = Path(__file__).resolve().parents[1] / "templates" / "demo_business.sql"
#: The demo's entity sources (the SQL queries that read ``DEMO_SCHEMA``'s tables).
DEMO_SOURCES = DEMO_SCHEMA.with_name("demo_entity_sources.toml")


def load_demo_business(url: str) -> None:
    """Create the demo business schema and rows (``templates/demo_business.sql``) at ``url``."""
    statements = [s.strip() for s in DEMO_SCHEMA.read_text(encoding="utf-8").split(";")]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                body = "\n".join(line for line in statement.splitlines()
                                 if not line.strip().startswith("--")).strip()
                if body:
                    conn.exec_driver_sql(body)
    finally:
        engine.dispose()
