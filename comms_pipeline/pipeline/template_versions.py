"""Template versions: saving makes a draft, publishing makes a version the live one.

``templates`` and ``template_variants`` hold the *live* version's content, so everything that
renders (the Monitor for SMS and push, the Email and Letter Monitors, previews, the request
checks) reads the published template and nothing else, and records ``templates.live_version``
on the communication it renders. ``template_versions`` keeps every version's whole content.

The rules:

- the first version of a new template is published at once (a template that exists but can
  send nothing would break every flow that adds a template and then uses it);
- saving an existing template adds version N+1 as a *draft*; the live one is unchanged until
  :func:`publish` (``comms templates publish CODE``), and publishing an earlier version is the
  rollback; :func:`save_version` with ``publish=True`` saves and publishes in one step (the
  built-in loader, ``comms templates update --publish``, and the programmatic
  :func:`comms_pipeline.pipeline.admin_records.save_template` kept for existing callers);
- saving content identical to the newest version adds nothing.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline import audit
from comms_pipeline.store.models import template_versions_t, templates_t, variants_t
from comms_pipeline.store.queries import find_external_system

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

META_FIELDS = ("name", "media", "direction", "category", "classification",
               "referring_entities", "unrestricted_params", "external_system",
               "default_language")
PARTS = (("subject", "subject"), ("html", "body_html"), ("txt", "body_text"))


class VersionError(CommsError):
    """No such template or version."""


@dataclass(frozen=True)
class SavedVersion:
    template_id: int
    version: int
    published: bool
    #: False when the content equalled the newest version's (nothing was added).
    created: bool


def spec_content(spec: TemplateSpec) -> dict[str, Any]:
    """A spec as the JSON a version stores."""
    content = asdict(spec)
    content["referring_entities"] = list(spec.referring_entities)
    content["unrestricted_params"] = list(spec.unrestricted_params)
    return content


def spec_from_content(content: dict[str, Any]) -> TemplateSpec:
    data = dict(content)
    variants = [VariantSpec(**v) for v in data.pop("variants", [])]
    return TemplateSpec(variants=variants, **data)


def _template(conn: Connection, code: str) -> Any:
    return conn.execute(select(templates_t.c.id, templates_t.c.live_version)
                        .where(templates_t.c.code == code)).first()


def _require(conn: Connection, code: str) -> Any:
    row = _template(conn, code)
    if row is None:
        raise VersionError(f"no template with code {code!r} (see `comms templates list`)")
    return row


def _newest(conn: Connection, template_id: int) -> Any:
    v = template_versions_t
    return conn.execute(select(v.c.version, v.c.content).where(v.c.template_id == template_id)
                        .order_by(v.c.version.desc()).limit(1)).first()


def _write_live(conn: Connection, spec: TemplateSpec, version: int,
                template_id: int | None) -> int:
    """Make ``spec`` the content of ``templates`` / ``template_variants`` (the live one)."""
    external = None
    if spec.external_system is not None:
        external = find_external_system(conn, spec.external_system)
        if external is None:
            raise LookupError(f"no external system with code {spec.external_system!r}")
    now = utcnow()
    values = {
        "code": spec.code, "name": spec.name, "media": spec.media, "direction": spec.direction,
        "category": spec.category, "classification": spec.classification,
        "referring_entities": list(spec.referring_entities),
        "unrestricted_params": list(spec.unrestricted_params),
        "external_system_id": external, "default_language": spec.default_language,
        "updated_at": now, "live_version": version,
    }
    if template_id is None:
        template_id = conn.execute(insert(templates_t).values(created_at=now, **values)
                                   .returning(templates_t.c.id)).scalar_one()
    else:
        conn.execute(update(templates_t).where(templates_t.c.id == template_id).values(values))
        conn.execute(delete(variants_t).where(variants_t.c.template_id == template_id))
    if spec.variants:
        conn.execute(insert(variants_t), [
            {"template_id": template_id, "language": v.language, "subject": v.subject,
             "body_html": v.body_html, "body_text": v.body_text} for v in spec.variants])
    return template_id


def _summary(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """What a version changed against the one before: settings and the parts touched."""
    before = before or {}
    fields = audit.changed_fields({k: before.get(k) for k in META_FIELDS},
                                  {k: after.get(k) for k in META_FIELDS})
    old = {p: t for p, t in _files(before).items() if p != "template.toml"}
    new = {p: t for p, t in _files(after).items() if p != "template.toml"}
    parts = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    return {"fields": fields, "parts": parts}


def save_version(conn: Connection, spec: TemplateSpec, *, publish: bool = False,
                 actor: str | None = None) -> SavedVersion:
    """Save ``spec`` as the template's next version (see the module docstring's rules)."""
    content = spec_content(spec)
    row = _template(conn, spec.code)
    now = utcnow()
    by = actor or audit.current_actor()
    v = template_versions_t
    if row is None:
        template_id = _write_live(conn, spec, 1, None)
        conn.execute(insert(v).values(template_id=template_id, template_code=spec.code,
                                      version=1, content=content, created_at=now,
                                      created_by=by, published_at=now))
        audit.record(conn, actor=by, action="template.create", target_kind="template",
                     target_id=spec.code, change={"version": 1, "published": True,
                                                  **_summary(None, content)})
        return SavedVersion(template_id, 1, True, True)
    newest = _newest(conn, row.id)
    if newest is not None and newest.content == content:
        number, created = newest.version, False
    else:
        number, created = (newest.version + 1 if newest else 1), True
        conn.execute(insert(v).values(template_id=row.id, template_code=spec.code,
                                      version=number, content=content, created_at=now,
                                      created_by=by))
        audit.record(conn, actor=by, action="template.save", target_kind="template",
                     target_id=spec.code, change={
                         "version": number, "draft": not publish,
                         **_summary(newest.content if newest else None, content)})
    published = row.live_version == number
    if publish and not published:
        publish_version(conn, spec.code, number, actor=by)
        published = True
    return SavedVersion(row.id, number, published, created)


def publish_version(conn: Connection, code: str, version: int | None = None, *,
                    actor: str | None = None) -> tuple[int | None, int]:
    """Make ``version`` (default: the newest) the live one; ``(previous, published)``.

    Publishing an earlier version is the rollback; publishing the live one changes nothing.
    """
    row = _require(conn, code)
    v = template_versions_t
    if version is None:
        newest = _newest(conn, row.id)
        if newest is None:
            raise VersionError(f"template {code!r} has no versions")
        version = int(newest.version)
    content = conn.execute(select(v.c.content).where(
        v.c.template_id == row.id, v.c.version == version)).scalar_one_or_none()
    if content is None:
        raise VersionError(f"template {code!r} has no version {version} "
                           f"(see `comms templates history {code}`)")
    previous = row.live_version
    if previous == version:
        return previous, version
    _write_live(conn, spec_from_content(content), version, row.id)
    conn.execute(update(v).where(v.c.template_id == row.id, v.c.version == version)
                 .values(published_at=utcnow()))
    audit.record(conn, actor=actor, action="template.publish", target_kind="template",
                 target_id=code, change={"live_version": {"before": previous,
                                                          "after": version},
                                         "rollback": previous is not None
                                         and version < previous})
    return previous, version


def history(conn: Connection, code: str) -> list[dict[str, Any]]:
    """Every version, oldest first: number, when and by whom, published when, live or not."""
    row = _require(conn, code)
    v = template_versions_t
    rows = conn.execute(select(v.c.version, v.c.created_at, v.c.created_by, v.c.published_at)
                        .where(v.c.template_id == row.id).order_by(v.c.version)).mappings()
    return [{**r, "live": r["version"] == row.live_version,
             "state": ("live" if r["version"] == row.live_version
                       else "draft" if r["published_at"] is None else "published before")}
            for r in rows]


def fetch_version(conn: Connection, code: str, version: int) -> TemplateSpec:
    row = _require(conn, code)
    v = template_versions_t
    content = conn.execute(select(v.c.content).where(
        v.c.template_id == row.id, v.c.version == version)).scalar_one_or_none()
    if content is None:
        raise VersionError(f"template {code!r} has no version {version} "
                           f"(see `comms templates history {code}`)")
    return spec_from_content(content)


def draft_version(conn: Connection, code: str) -> int | None:
    """The newest version when it is newer than the live one (a draft), else None."""
    row = _require(conn, code)
    v = template_versions_t
    newest = conn.execute(select(func.max(v.c.version)).where(
        v.c.template_id == row.id)).scalar_one_or_none()
    if newest is None or (row.live_version is not None and newest <= row.live_version):
        return None
    return int(newest)


def live_version(conn: Connection, code: str) -> int | None:
    return _require(conn, code).live_version


def _files(content: dict[str, Any]) -> dict[str, str]:
    """A version as the files of its template directory (``template.toml``, ``en.txt``…)."""
    if not content:
        return {}
    lines = [f"{key} = {json.dumps(content.get(key), ensure_ascii=False)}"
             for key in ("code", *META_FIELDS) if content.get(key) is not None]
    files = {"template.toml": "\n".join(lines) + "\n"}
    for variant in content.get("variants", []):
        for suffix, attr in PARTS:
            text = variant.get(attr)
            if text:
                files[f"{variant['language']}.{suffix}"] = text if text.endswith("\n") \
                    else text + "\n"
    return files


def diff(conn: Connection, code: str, a: int, b: int) -> str:
    """A unified diff from version ``a`` to version ``b``, file by file ('' when equal)."""
    old = _files(spec_content(fetch_version(conn, code, a)))
    new = _files(spec_content(fetch_version(conn, code, b)))
    out: list[str] = []
    for name in sorted(set(old) | set(new), key=lambda n: (n != "template.toml", n)):
        out.extend(difflib.unified_diff(
            old.get(name, "").splitlines(keepends=True),
            new.get(name, "").splitlines(keepends=True),
            fromfile=f"{code}@v{a}/{name}" if name in old else "/dev/null",
            tofile=f"{code}@v{b}/{name}" if name in new else "/dev/null"))
    return "".join(out)
