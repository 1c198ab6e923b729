"""Process-wide objects the request handlers share (settings, keys, database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from consent_api.config import ConsentSettings
from consent_api.keys import MasterKey
from consent_api.receipts.signer import ReceiptSigner


@dataclass
class AppContext:
    settings: ConsentSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    master: MasterKey
    signer: ReceiptSigner


async def get_context(request: Request) -> AppContext:
    # async: a plain attribute read needs no worker thread.
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_context)]
