"""Process-wide objects the request handlers share (settings, database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from registry.config import RegistrySettings


@dataclass
class AppContext:
    settings: RegistrySettings
    engine: Engine
    session_factory: sessionmaker[Session]


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_context)]
