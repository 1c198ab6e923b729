"""`revocation-worker keys rotate | status`: reseal every endpoint secret under the current key
(docs/operations.md, key rotation). The secrets themselves do not change: licensees notice nothing."""

from __future__ import annotations

import sys

from sqlalchemy.orm import Session

from rescind_common import keyrotation
from rescind_common.db import make_engine, make_session_factory, utcnow
from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints import repository
from revocation_worker.endpoints import service as endpoints
from revocation_worker.secrets import SecretBox

WHAT = "endpoint secrets"


def rotate(settings: WorkerSettings, batch_size: int = 500) -> keyrotation.Report:
    box = SecretBox.from_settings(settings)
    current = box.ring.current_id
    engine = make_engine(settings.worker_database_url, pool_size=1)
    try:

        def batch(session: Session, after: str) -> tuple[str | None, int, dict[str, int]]:
            rows = repository.to_reseal(session, current, after, batch_size)
            if not rows:
                return None, 0, {}
            done, unavailable = endpoints.reseal(box, rows, utcnow())
            return rows[-1].id, done, unavailable

        return keyrotation.rotate(
            make_session_factory(engine),
            batch,
            repository.secret_key_counts,
            what=WHAT,
            current=current,
            configured=box.ring.ids,
            progress=sys.stderr,
        )
    finally:
        engine.dispose()


def status(settings: WorkerSettings) -> keyrotation.Report:
    box = SecretBox.from_settings(settings)
    engine = make_engine(settings.worker_database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            counts = repository.secret_key_counts(session)
    finally:
        engine.dispose()
    missing = {k: n for k, n in counts.items() if not box.ring.has(k)}
    return keyrotation.Report(WHAT, box.ring.current_id, box.ring.ids, None, missing, counts)
