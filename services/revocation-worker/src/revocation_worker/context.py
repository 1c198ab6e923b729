"""Process-wide objects shared by the API and the worker loops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from rescind_common.ratelimit import TokenBucketLimiter
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
    # Licensees' redeliver requests and endpoint registrations, per licensee (in-process: each API
    # replica limits on its own).
    redeliveries: TokenBucketLimiter = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.redeliveries = TokenBucketLimiter(s.worker_redeliver_per_minute / 60, s.worker_redeliver_burst)


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_context)]
