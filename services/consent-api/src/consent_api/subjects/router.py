from __future__ import annotations

from fastapi import APIRouter

from consent_api.context import Ctx
from consent_api.db import DbSession
from consent_api.subjects import service
from consent_api.subjects.schemas import ProfileIn, ProfileOut
from rescind_common.auth import CurrentSubject
from rescind_common.problems import Problem

router = APIRouter(prefix="/v1/profile", tags=["profile"])


@router.put("", response_model=ProfileOut, summary="Set the subject's profile (stored encrypted)")
def put_profile(body: ProfileIn, principal: CurrentSubject, session: DbSession, ctx: Ctx) -> ProfileOut:
    subject = service.current(session, ctx, principal, lock=True)
    profile = body.model_dump(mode="json", exclude_none=True)
    service.set_profile(session, ctx, subject, profile)
    return ProfileOut(subject_id=subject.id, **profile)


@router.get("", response_model=ProfileOut, summary="Read the subject's profile")
def get_profile(principal: CurrentSubject, session: DbSession, ctx: Ctx) -> ProfileOut:
    subject = service.existing(session, ctx, principal)
    profile = service.get_profile(session, ctx, subject) if subject else None
    if subject is None or profile is None:
        raise Problem(404, "No profile is stored for this subject.")
    return ProfileOut(subject_id=subject.id, **profile)
