"""Erasure over the Web API (admin keys only): one person's personal data removed everywhere.

The same as ``comms contacts erase REF``: see :mod:`comms_pipeline.pipeline.erasure`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.pipeline.erasure import (
    ErasureBusyError,
    ErasureStoreError,
    NothingToEraseError,
    erase,
)
from comms_pipeline.web.auth import require
from comms_pipeline.web.errors import ApiError, error_responses, not_found
from comms_pipeline.web.schemas import NO_NUL, UtcOut, utc_out
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(tags=["contacts"], responses=error_responses(401, 403, 404, 422),
                   route_class=StrictJsonRoute)
Admin = Annotated[Principal, Depends(require("admin"))]


class ErasureOut(BaseModel):
    pseudonym: str = Field(description="What now stands for the person wherever counts stay")
    erased_at: UtcOut
    erased_by: str
    counts: dict[str, int] = Field(description="Rows touched, by kind (entries, documents…)")
    already: bool = Field(description="The person had been erased before: nothing more found")


@router.post("/v1/contacts/{ref}/erase", response_model=ErasureOut,
             summary="Erase a person's personal data everywhere",
             description="Removes the contact's name, addresses and data, the addresses, "
                         "subjects and bodies of what was sent to them, their documents "
                         "(database and store), tracking data, notification data and their "
                         "communications log text; cancels what is not sent yet. States, "
                         "codes and timestamps stay under a pseudonym, and the erasure is "
                         "recorded. Idempotent: erasing again answers `already: true`. "
                         "Admin keys only. 404 when nothing has the reference; 409 while a "
                         "job or daemon holds some of the person's rows, 502 when a "
                         "document store failed (nothing was erased either way: call again).")
def erase_person(request: Request, principal: Admin,
                 ref: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)]
                 ) -> dict:
    try:
        result = erase(request.app.state.engine, request.app.state.settings, ref,
                       actor=principal.actor)
    except NothingToEraseError as exc:
        raise not_found(str(exc)) from None
    except ErasureBusyError as exc:
        raise ApiError(409, "erasure_busy", str(exc)) from None
    except ErasureStoreError as exc:
        raise ApiError(502, "storage_unavailable", str(exc)) from None
    out = result.as_dict()
    out["erased_at"] = utc_out(result.erased_at)
    return out
