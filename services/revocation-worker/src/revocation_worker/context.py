"""Process-wide objects shared by the API and the worker loops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints.urlguard import AddressPolicy
from revocation_worker.secrets import SecretBox


@dataclass
class AppContext:
    settings: WorkerSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    secrets: SecretBox
    policy: AddressPolicy


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_context)]
